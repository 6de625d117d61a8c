"""The demo LMS's JSON API; its marking endpoints are tracked by tutor_times."""

from __future__ import annotations

import functools
import secrets
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template_string,
    request,
    session,
)
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.exceptions import HTTPException
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db, login_manager, tutor_times
from .models import Comment, Project, Task, TaskDefinition, UnitRole, User

bp = Blueprint("lms", __name__)

STATUSES = frozenset(
    {
        "ready_for_feedback",
        "discuss",
        "demonstrate",
        "complete",
        "fix_and_resubmit",
        "redo",
        "feedback_exceeded",
        "fail",
        "time_exceeded",
    }
)
STAFF = frozenset({"admin", "convenor", "tutor"})


SESSION_VERSION = "session_version"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    user = db.session.get(User, int(user_id))
    if user is None or session.get(SESSION_VERSION) != user.session_version:
        return None  # a session from before the user's last logout
    return user


@functools.cache
def _dummy_hash(method: str) -> str:
    return generate_password_hash(secrets.token_hex(16), method=method)


@login_manager.unauthorized_handler
def unauthorized() -> Any:
    return jsonify(error={"status": 401, "message": "log in first"}), 401


@tutor_times.role_loader
def unit_role(user: User, unit_id: int) -> str | None:
    """The user's role in the unit, looked up once per request: a tracked view asks, and so
    does the tracker after it."""
    cache: dict[tuple[int, int], str | None] = g.setdefault("unit_roles", {})
    key = (user.id, unit_id)
    if key not in cache:
        cache[key] = _load_role(user, unit_id)
    return cache[key]


@tutor_times.staff_loader
def site_staff(user: User) -> bool:
    """The LMS's administrators may read /tutor-times/metrics without its token."""
    return bool(user.is_admin)


@tutor_times.name_loader
def user_names(user_ids: list[int]) -> dict[int, str]:
    """The dashboard's tutors by name, in one query for the whole page."""
    rows = db.session.execute(sa.select(User.id, User.name).where(User.id.in_(user_ids)))
    return {user_id: name for user_id, name in rows}


@tutor_times.target_loader
def unit_targets(
    unit_id: int, project_id: int | None, task_id: int | None, task_definition_id: int | None
) -> bool:
    """Whether the ids a client reports belong to the unit (and to each other): a heartbeat
    may name only the unit's own projects, tasks and task definitions."""
    if project_id is not None:
        project = db.session.get(Project, project_id)
        if project is None or project.unit_id != unit_id:
            return False
    if task_id is not None:
        task = db.session.get(Task, task_id)
        if task is None or task.project.unit_id != unit_id:
            return False
        if project_id is not None and task.project_id != project_id:
            return False
        if task_definition_id is not None and task.task_definition_id != task_definition_id:
            return False
    if task_definition_id is not None:
        definition = db.session.get(TaskDefinition, task_definition_id)
        if definition is None or definition.unit_id != unit_id:
            return False
    return True


def _load_role(user: User, unit_id: int) -> str | None:
    if user.is_admin:
        return "admin"
    role = db.session.scalar(
        sa.select(UnitRole.role).where(UnitRole.user_id == user.id, UnitRole.unit_id == unit_id)
    )
    if role is not None:
        return str(role)
    enrolled = db.session.scalar(
        sa.select(Project.id).where(Project.user_id == user.id, Project.unit_id == unit_id)
    )
    return "student" if enrolled is not None else None


@bp.errorhandler(HTTPException)
def json_error(exc: HTTPException) -> Any:
    return jsonify(error={"status": exc.code, "message": exc.description}), exc.code


def require_staff(unit_id: int) -> str:
    role = unit_role(current_user, unit_id)
    if role not in STAFF:
        abort(403, "only the unit's staff may do this")
    return role


def task_in_unit(unit_id: int, project_id: int, task_id: int) -> Task:
    task = db.session.get(Task, task_id)
    if task is None or task.project_id != project_id or task.project.unit_id != unit_id:
        abort(404, "no such task in this unit")
    return task


def task_for_owner_or_staff(unit_id: int, project_id: int, task_id: int) -> Task:
    """The student who owns the task, or the unit's staff, may open and comment on it."""
    task = task_in_unit(unit_id, project_id, task_id)
    if task.project.user_id != current_user.id:
        require_staff(unit_id)
    return task


def task_definition_of(kwargs: Mapping[str, Any]) -> int:
    return int(db.session.get(Task, kwargs["task_id"]).task_definition_id)


def not_own_project(kwargs: Mapping[str, Any]) -> bool:
    """A marker working on their own project is not marking (R7)."""
    return bool(db.session.get(Project, kwargs["project_id"]).user_id != current_user.id)


TASK_IDS: dict[str, Any] = {
    "unit_id": "unit_id",
    "project_id": "project_id",
    "task_id": "task_id",
    "task_definition_id": task_definition_of,
    "when": not_own_project,
}


LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Log in</title>
<link rel="icon" href="data:,"></head>
<body style="font-family: system-ui, sans-serif; max-width: 22rem; margin: 3rem auto">
<h1>Demo LMS</h1><form method="post"><input type="hidden" name="next" value="{{ next }}">
<p><label>User <input name="username" value="convenor" autocomplete="username"></label></p>
<p><label>Password <input name="password" type="password" value="password"></label></p>
<p><button type="submit">Log in</button></p></form>
<p>Users: admin, convenor, tutor1, tutor2, student1; password <code>password</code>.</p>
</body></html>"""


@bp.get("/login")
def login_page() -> Any:
    """A form for the browser, so the dashboard pages can be reached by hand."""
    return render_template_string(LOGIN_PAGE, next=request.args.get("next", ""))


def _local_next(target: str) -> str:
    """Where a form login goes next: a path of this site only, never another host.

    A browser drops tabs and newlines from a URL and reads a backslash as a slash, so
    ``/<tab>/evil.example`` is ``//evil.example`` to it: a target with any control or
    separator character, or a backslash, is refused rather than cleaned, and what is left
    must parse as a path alone (no scheme, no host)."""
    unsafe = any(c == "\\" or unicodedata.category(c)[0] in "CZ" for c in target)
    parts = urlsplit(target)
    if (
        not unsafe
        and target.startswith("/")
        and not target.startswith("//")
        and not parts.scheme
        and not parts.netloc
    ):
        return target
    return "/tutor-times/me/dashboard"


@bp.post("/login")
def login() -> Any:
    """JSON in, the user as JSON out; or the form of GET /login, redirected to ``next``."""
    form = not request.is_json
    data = request.form if form else (request.get_json(silent=True) or {})
    password = str(data.get("password", ""))
    user = db.session.scalar(sa.select(User).where(User.username == data.get("username")))
    if user is None:
        # Hash anyway: an answer that comes back faster would tell who has an account.
        check_password_hash(_dummy_hash(current_app.config["PASSWORD_HASH_METHOD"]), password)
        abort(401, "wrong username or password")
    if not user.check_password(password):
        abort(401, "wrong username or password")
    login_user(user)
    session[SESSION_VERSION] = user.session_version
    if form:
        return redirect(_local_next(str(data.get("next", ""))))
    return jsonify(user.to_dict())


@bp.post("/logout")
def logout() -> Any:
    """End every session of this user: the session cookie alone cannot be revoked."""
    if current_user.is_authenticated:
        current_user.session_version += 1
        db.session.commit()
    logout_user()
    session.pop(SESSION_VERSION, None)
    return "", 204


@bp.get("/me")
@login_required
def me() -> Any:
    return jsonify(current_user.to_dict())


@bp.get("/units/<int:unit_id>/inbox")
@login_required
@tutor_times.track("inbox", unit_id="unit_id")
def inbox(unit_id: int) -> Any:
    require_staff(unit_id)
    tasks = db.session.scalars(
        sa.select(Task)
        .join(Project)
        .where(Project.unit_id == unit_id, Task.status == "ready_for_feedback")
        .order_by(Task.id)
    ).all()
    return jsonify(tasks=[t.to_dict() for t in tasks])


@bp.get("/units/<int:unit_id>/projects/<int:project_id>/tasks/<int:task_id>/submission")
@login_required
@tutor_times.track("get-submission-details", **TASK_IDS)
def submission(unit_id: int, project_id: int, task_id: int) -> Any:
    task = task_for_owner_or_staff(unit_id, project_id, task_id)
    return jsonify(task.to_dict() | {"submission": task.submission})


@bp.post("/units/<int:unit_id>/projects/<int:project_id>/tasks/<int:task_id>/comments")
@login_required
@tutor_times.track("add-comment", **TASK_IDS)
def add_comment(unit_id: int, project_id: int, task_id: int) -> Any:
    task = task_for_owner_or_staff(unit_id, project_id, task_id)
    text = (request.get_json(silent=True) or {}).get("text")
    if not isinstance(text, str) or not text.strip():
        abort(400, "text: a non-empty comment is required")
    comment = Comment(task_id=task.id, user_id=current_user.id, text=text)
    db.session.add(comment)
    db.session.commit()
    return jsonify(id=comment.id, task_id=task.id, text=comment.text), 201


@bp.put("/units/<int:unit_id>/projects/<int:project_id>/tasks/<int:task_id>")
@login_required
# the front end retries a PUT that timed out with the same Idempotency-Key: counted once
@tutor_times.track("assessing", idempotency_header="Idempotency-Key", **TASK_IDS)
def assess(unit_id: int, project_id: int, task_id: int) -> Any:
    task = task_in_unit(unit_id, project_id, task_id)
    require_staff(unit_id)
    status = (request.get_json(silent=True) or {}).get("status")
    if status not in STATUSES:
        abort(400, f"status: one of {', '.join(sorted(STATUSES))}")
    task.status = status
    db.session.commit()
    return jsonify(task.to_dict())
