"""The report endpoints' blueprint: authentication, authorization, JSON."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask_login import current_user
from werkzeug.exceptions import HTTPException

from .constants import TRACKED_ROLES
from .reports import active_sessions

bp = Blueprint("tutor_times", __name__)

SEE_EVERY_TUTOR = frozenset({"admin", "convenor"})


class ApiError(HTTPException):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = status
        self.field = field


@bp.errorhandler(HTTPException)
def json_error(exc: HTTPException) -> Any:
    error: dict[str, Any] = {"status": exc.code, "message": exc.description}
    if getattr(exc, "field", None):
        error["field"] = exc.field  # type: ignore[attr-defined]
    return jsonify(error=error), exc.code


def _owner() -> Any:
    return current_app.extensions["tutor_times"].owner


def marker_scope(unit_id: int) -> int | None:
    """None when the user sees every tutor of the unit, else the user's own id.

    Anonymous users get 401 as JSON (never a redirect to a login page).
    """
    if not current_user or not current_user.is_authenticated:
        raise ApiError(401, "authentication required")
    ext = _owner()
    role = ext.role_of(current_user, unit_id)
    if role in SEE_EVERY_TUTOR:
        return None
    if role in TRACKED_ROLES:
        return int(ext.marker_id_of(current_user))
    raise ApiError(403, "only the unit's convenors, admins and tutors may see its marking times")


@bp.get("/units/<int:unit_id>/active")
def active(unit_id: int) -> Any:
    """Open sessions of the unit, right now (a tutor sees only their own)."""
    marker_id = marker_scope(unit_id)
    ext = _owner()
    state = ext.state
    with state.tracker.sql.connect() as conn:
        rows = active_sessions(
            conn, ext.models, unit_id=unit_id, marker_id=marker_id, min_minutes=state.min_minutes
        )
    return jsonify(unit_id=unit_id, sessions=rows)
