"""The report endpoints: who may see what, and how it is rendered."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Blueprint, current_app, request
from flask_login import current_user
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from ..app.services import services
from ..core.constants import DEFAULTS, TRACKED_ROLES, ConfigVars
from ..reports.scope import Scope
from . import schemas as s
from .api import Api, ApiError, error_response

logger = logging.getLogger("tutor_times")

T = TypeVar("T")

# The dashboard's templates and static files ship in the package, under the prefix; a host's
# own templates/tutor_times/*.html override them (Flask looks in the app's folder first).
bp = Blueprint(
    "tutor_times",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

#: TUTOR_TIMES_MAX_BODY_BYTES's default
MAX_BODY_BYTES = DEFAULTS[ConfigVars.MAX_BODY_BYTES]


def body_cap() -> int:
    """TUTOR_TIMES_MAX_BODY_BYTES, or the host's MAX_CONTENT_LENGTH when it is smaller."""
    cap = services().state.settings.max_body_bytes
    host_cap = current_app.config.get("MAX_CONTENT_LENGTH")
    return cap if host_cap is None else min(cap, int(host_cap))


api = Api(
    bp,
    title="tutor_times reports",
    version="1",
    authenticate=lambda: current_user_id(),
    body_cap=body_cap,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"

SEE_EVERY_TUTOR = frozenset({"admin", "convenor"})
bp.register_error_handler(HTTPException, error_response)

#: what a 503 that the database could not answer tells the client to wait, in seconds
RETRY_AFTER_S = 1
UNAVAILABLE = "the database is unavailable for a moment; try again"


def unavailable(exc: BaseException) -> bool:
    """Whether a database error means "not now" rather than a fault of ours: the connection
    was dropped (a restart), or the server gave up on the statement, the lock or the
    connection (an operational error), or the pool had no connection in time."""
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.TimeoutError)) or (
        isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)
    )


def database_unavailable(exc: sa.exc.SQLAlchemyError) -> Any:
    """A report (or any endpoint of ours) whose database went away while it read: a 503
    with Retry-After, as JSON; anything else is raised on as the fault it is."""
    if not unavailable(exc):
        raise exc
    logger.warning("answered 503: %s", exc.__class__.__name__, exc_info=exc)
    roll_back_host_session()
    response, status = error_response(ApiError(503, UNAVAILABLE))
    response.status_code = status
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


bp.register_error_handler(sa.exc.SQLAlchemyError, database_unavailable)


def roll_back_host_session() -> None:
    """After the database dropped the connection of the host's session (a restart), the
    session refuses every statement until it is rolled back: roll it back, so that what
    still runs in the request (the host's context processors, its teardown) reads on a new
    connection rather than failing the answer."""
    try:
        services().db.session.rollback()
    except sa.exc.SQLAlchemyError as err:
        logger.warning("the host's session could not be rolled back: %s", err)


@bp.teardown_request
def _end_the_host_session(exc: BaseException | None) -> None:
    """Our endpoints read the host's database only through its callbacks (the user, the
    role, the names, the targets), on the host's session, and never write through it: its
    transaction is rolled back here, before the host's own teardown closes the session. A
    database that went away meanwhile (a restart) is then logged here, rather than raised
    by the host's teardown as a 500 in place of the answer already made."""
    sessions = services().db.session
    if not sessions.registry.has():
        return
    session = sessions()
    if not session.in_transaction():
        return
    try:
        session.rollback()
    except sa.exc.SQLAlchemyError as err:
        if not unavailable(err):
            raise
        logger.warning("the host's session could not be rolled back: %s", err)


@bp.before_request
def _cap_the_body() -> None:
    """Refuse a body over the cap before anything reads it: a declared length at once; a
    streamed one (no Content-Length) is read one byte past the cap at most."""
    cap = body_cap()
    request.max_content_length = cap + 1
    if request.content_length is not None and request.content_length > cap:
        raise ApiError(413, f"the request body is larger than {cap} bytes", "body")


@bp.before_app_request
def _routing_errors_in_json() -> Any:
    """A 404 or 405 under the prefix answered in JSON like every other error of ours.

    Routing fails before any blueprint is chosen, so the blueprint's error handler never
    sees it; this app-wide hook runs first and takes only paths under the prefix.
    """
    exc = request.routing_exception
    if not isinstance(exc, (NotFound, MethodNotAllowed)):
        return None  # also a redirect to the canonical URL: left to werkzeug
    prefix = current_app.config["TUTOR_TIMES_URL_PREFIX"].rstrip("/")
    if not prefix or (request.path != prefix and not request.path.startswith(prefix + "/")):
        return None  # the host's own URL
    if isinstance(exc, MethodNotAllowed):
        allowed = sorted(exc.valid_methods or ())
        message = f"{request.method} is not allowed here; use {', '.join(allowed)}"
        response = error_response(ApiError(405, message))
        return response[0], 405, {"Allow": ", ".join(allowed)}
    return error_response(ApiError(404, "no such endpoint; see openapi.json"))


def current_user_id() -> int:
    """The logged-in user's id; anonymous users get 401 as JSON, never a login redirect."""
    if not current_user or not current_user.is_authenticated:
        raise ApiError(401, "authentication required")
    return int(services().marker_id_of(current_user))


def marker_scope(unit_id: int, requested: int | None = None) -> int | None:
    """Whose rows the user may see in the unit: None for every tutor (convenors, admins,
    or the ``requested`` tutor), else the user's own id. Another tutor's rows are a 403."""
    me = current_user_id()
    role = services().role_of(current_user, unit_id)
    if role in SEE_EVERY_TUTOR:
        return requested
    if role in TRACKED_ROLES:
        if requested not in (None, me):
            raise ApiError(403, "a tutor may see only their own marking times", "marker_id")
        return me
    raise ApiError(403, "only the unit's convenors, admins and tutors may see its marking times")


def date_range(query: s.RangeQuery) -> tuple[datetime, datetime]:
    """The query's [start, end) in UTC; "today" is the extension's clock's, in ``tz``."""
    return query.bounds(services().clock().astimezone(query.zone()).date())


def _range_out(start: datetime, end: datetime, query: s.RangeQuery) -> dict[str, Any]:
    return {"start": start, "end": end, "tz": query.tz}


def unit_scope(unit_id: int, query: s.UnitReportQuery) -> tuple[Scope, dict[str, Any]]:
    marker_id = marker_scope(unit_id, query.marker_id)
    start, end = date_range(query)
    return Scope(start, end, unit_id=unit_id, marker_id=marker_id), _range_out(start, end, query)


def live_after() -> datetime:
    """Sessions whose last activity is after this instant are live: the next activity
    would still join them (R2), whether or not a sweep has closed the others yet."""
    ext = services()
    return ext.clock() - ext.state.timeout
