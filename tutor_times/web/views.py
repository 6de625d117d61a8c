"""The report endpoints: who may see what, and how it is rendered."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, jsonify, request
from flask_login import current_user
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from ..app import health
from ..app.services import services
from ..core import metrics
from ..core.constants import DEFAULTS, TRACKED_ROLES, ConfigVars
from ..core.errors import InvalidActivityError, UnknownReferenceError
from ..reports import read_models as reports
from ..reports import whatif
from ..reports.read_models import Scope
from ..store import class_store, class_times, drivers, idempotency
from . import csv_export, ranges
from . import schemas as s
from .api import Api, ApiError, error_response
from .beside import Beside
from .csv_export import csv_response

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


#: where :func:`one_connection` keeps the request's reports connection
SHARED_CONNECTION = "tutor_times_reports_connection"
#: where :func:`one_connection` keeps the second connection it reads beside the first
BESIDE = "tutor_times_reports_beside"


def _reports_engine() -> sa.Engine:
    """The reports pool (:meth:`~tutor_times.app.state.AppState.reports_engine`) on the host's
    database, or on the reports bind if one is set."""
    ext = services()
    bind = ext.state.settings.reports_bind
    # Reports only read, so they may go to a replica (TUTOR_TIMES_REPORTS_BIND); tracking and
    # closing never come here and always write to the primary.
    source = ext.db.engine if bind is None else ext.db.engines[bind]
    return ext.state.reports_engine(source)


@contextmanager
def _reading() -> Iterator[sa.Connection]:
    """A connection of the reports pool whose read ends in a COMMIT rather than the pool's
    rollback: psycopg forgets its prepared statements on every rollback, so only a
    connection returned with no transaction open keeps them, and the next report on it runs
    its statements prepared rather than parsed afresh."""
    with _reports_engine().connect() as conn:
        yield conn
        conn.commit()


@contextmanager
def one_connection(*, beside: bool = False) -> Iterator[None]:
    """Every :func:`report` inside runs on one connection: a page of several reports checks
    a connection out of the reports' pool (a ping) and returns it (a commit) once, not per
    report. With ``beside``, the reports given to :func:`later` run on a second connection
    reading the same snapshot, while the page goes on (:mod:`.beside`)."""
    with _reading() as conn:
        second: Beside | None = None
        try:
            setattr(g, SHARED_CONNECTION, conn)
            second = Beside.of(conn, _reports_engine()) if beside else None
            if second is not None:
                setattr(g, BESIDE, second)
            yield
        finally:
            g.pop(SHARED_CONNECTION, None)
            g.pop(BESIDE, None)
            if second is not None:
                second.close()


def later(query: Callable[..., T], *args: Any, **kwargs: Any) -> Callable[[], T]:
    """:func:`report`, started on the second connection of :func:`one_connection` when it
    has one (else run now); returns what gives its result."""
    second: Beside | None = g.get(BESIDE)
    if second is None:
        result = report(query, *args, **kwargs)
        return lambda: result
    return second.run(_on(query, *args, **kwargs))


def report(query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one of the ``reports`` functions on a connection of its own (or the one of
    :func:`one_connection`), with the tables and the shortest session length it needs."""
    shared: sa.Connection | None = g.get(SHARED_CONNECTION)
    if shared is not None:
        return _on(query, *args, **kwargs)(shared)
    with _reading() as conn:
        return _on(query, *args, **kwargs)(conn)


def _on(query: Callable[..., T], *args: Any, **kwargs: Any) -> Callable[[sa.Connection], T]:
    """``query`` of ``reports`` as a function of a connection alone: given the tables and
    the shortest session length it needs (read here, in the request). A statement the
    database stopped at TUTOR_TIMES_REPORT_TIMEOUT is a 503 that says so."""
    ext = services()
    models, min_minutes = ext.models, ext.state.min_minutes
    limit = ext.state.settings.report_timeout

    def run(conn: sa.Connection) -> T:
        try:
            return query(conn, models, *args, min_minutes=min_minutes, **kwargs)
        except sa.exc.DBAPIError as exc:
            if not drivers.stopped_by_timeout(exc):
                raise
        raise ApiError(
            503,
            f"the report ran longer than TUTOR_TIMES_REPORT_TIMEOUT ({limit:g} s) and was"
            " stopped; ask for a shorter range, or try again later",
        )

    return run


def what_if(query: Callable[..., T], scope: Scope, *args: Any, seconds: int) -> T:
    """A ``whatif`` report under a timeout of ``seconds``. It reads the activities up to a
    timeout before the range (and a while after it); a range at the very start of the
    calendar leaves no room for that, and is a 400 naming ``timeout`` rather than a 500.
    Cutting more sessions than TUTOR_TIMES_WHATIF_MAX_SESSIONS is a 413 naming ``timeout``."""
    limit = services().state.settings.whatif_max_sessions
    try:
        return report(query, scope, *args, timeout=timedelta(seconds=seconds), limit=limit)
    except whatif.NoRoomInCalendar:
        raise ApiError(
            400,
            "timeout: the range is too close to the ends of the calendar for a what-if",
            "timeout",
        ) from None
    except whatif.TooManySessions:
        raise ApiError(
            413,
            f"timeout: under a timeout of {seconds} s this range's activities make more than"
            f" {limit} sessions (TUTOR_TIMES_WHATIF_MAX_SESSIONS); ask for a shorter range"
            " or a longer timeout",
            "timeout",
        ) from None


# -- class times (R12) --------------------------------------------------------------------

#: how far past a range's end its classes are asked for: a session that starts in the range
#: may run past its end
CLASS_MARGIN = timedelta(days=1)
#: the instants a host's loader is ever asked about: a day inside either end of the calendar,
#: so that converting them to any time zone (an offset under a day) cannot overflow
FIRST_ASKED = datetime.min.replace(tzinfo=timezone.utc) + timedelta(days=1)
LAST_ASKED = datetime.max.replace(tzinfo=timezone.utc) - timedelta(days=1)
#: a unit's report is asked for its range's whole months unless that reaches this near the
#: calendar's ends
MONTH_MARGIN = timedelta(days=64)


def timetable_of(scope: Scope, units: list[int] | None = None) -> class_times.Timetable | None:
    """The classes a report over ``scope`` splits its minutes by (R12), from the host's
    loader, called once per unit; None without a loader. A report across units (one
    tutor's own) names its ``units``, or they are those of the scope's sessions."""
    ext = services()
    if not ext.has_class_times:
        return None
    start = max(scope.start, FIRST_ASKED)
    end = LAST_ASKED if scope.end >= LAST_ASKED - CLASS_MARGIN else scope.end + CLASS_MARGIN
    if scope.unit_id is not None:
        if FIRST_ASKED + MONTH_MARGIN < scope.start and scope.end < LAST_ASKED - MONTH_MARGIN:
            # the range's whole months: the split kept of a month's blocks is tied to them
            start, end = class_store.asked(scope.start, scope.end)
        return ext.unit_timetable(scope.unit_id, start, end)
    if scope.marker_id is None:
        raise ValueError("class times need a unit or a tutor")
    if units is None:
        units = report(reports.units_of, scope)
    return ext.marker_timetable(scope.marker_id, units, start, end)


def split_sessions(scope: Scope, rows: list[dict[str, Any]]) -> None:
    """R12 per session row, when the host has class times (its loader is not asked about
    no rows)."""
    if rows and (timetable := timetable_of(scope, [r["unit_id"] for r in rows])) is not None:
        class_times.split_rows(rows, timetable)


def with_students(unit_id: int, result: dict[str, Any]) -> dict[str, Any]:
    """The legacy hours per student: each tutor's students (and the unit's, in the totals)
    and minutes per student, when the host counts students."""
    ext = services()
    if not ext.has_student_counts:
        return result
    rows = [(t, t["marker_id"]) for t in result["tutors"]] + [(result["totals"], None)]
    for row, marker_id in rows:
        add_students(unit_id, marker_id, row)
    return result


def add_students(unit_id: int, marker_id: int | None, row: dict[str, Any]) -> None:
    """A summary row's students (the tutor's, or with ``marker_id`` None the unit's) and its
    minutes per student."""
    students = services().students_of(unit_id, marker_id)
    row["students"] = students
    row["minutes_per_student"] = round(row["minutes"] / students, 1) if students else None


def _sessions_page(scope: Scope, query: s.SessionsQuery | s.MySessionsQuery) -> dict[str, Any]:
    """One page of the scope's sessions, as the query asks for it."""
    page = report(
        reports.sessions_page,
        scope,
        page=query.page,
        per_page=query.per_page,
        live_after=live_after(),
    )
    split_sessions(scope, page["sessions"])
    return page


def timeline_buckets(
    scope: Scope, tz: ZoneInfo, bucket: str, timetable: class_times.Timetable | None
) -> list[dict[str, Any]]:
    """Every day's or week's bucket of the scope, in ``tz``, split by ``timetable`` (the
    scope's :func:`timetable_of`)."""
    return later_timeline(scope, tz, bucket, timetable)()


def later_timeline(
    scope: Scope, tz: ZoneInfo, bucket: str, timetable: class_times.Timetable | None
) -> Callable[[], list[dict[str, Any]]]:
    """:func:`timeline_buckets`, started with :func:`later`."""
    starts = ranges.day_starts(scope.start, scope.end, tz, bucket)
    return later(reports.timeline, scope, starts, tz, timetable=timetable)


def unit_summary(scope: Scope, timetable: class_times.Timetable | None) -> dict[str, Any]:
    """The scope's summary, split by ``timetable`` (the scope's :func:`timetable_of`) and
    with students when the host has them."""
    result = report(reports.summary, scope, timetable=timetable)
    return result if scope.unit_id is None else with_students(scope.unit_id, result)


def _sessions_reply(
    name: str, result: dict[str, Any], query: s.SessionsQuery | s.MySessionsQuery
) -> Any:
    if query.style == "ontrack" and query.format != "csv":
        raise ApiError(400, "style: ontrack is a CSV style; add format=csv", "style")
    if query.format == "csv":
        split = services().has_class_times
        if query.style == "ontrack":
            rows = csv_export.ontrack_rows(result["sessions"], query.zone(), split=split)
            return csv_response(name, csv_export.ONTRACK_COLUMNS, rows)
        columns = csv_export.SESSION_COLUMNS + (csv_export.SPLIT_COLUMNS if split else [])
        return csv_response(
            name, columns, csv_export.session_rows(result["sessions"], query.zone())
        )
    return result


# -- endpoints ---------------------------------------------------------------------------


def unit_report(
    name: str, query: type[s.RangeQuery], response: type[Any]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``GET /units/{unit_id}/<name>``: a report over a range, in JSON or CSV."""
    return api.route(
        "GET",
        f"/units/{{unit_id}}/{name}",
        path=s.UnitPath,
        query=query,
        response=response,
        csv=True,
    )


@api.route("GET", "/units/{unit_id}/active", path=s.UnitPath, response=s.ActiveOut)
def active(path: s.UnitPath) -> Any:
    """Live sessions of the unit, right now.

    Open, with a last activity within the session timeout of now (an idle session is over
    even before a sweep closes it); each with its running duration (to its last activity).
    A tutor sees only their own.
    """
    marker_id = marker_scope(path.unit_id)
    rows = report(
        reports.active_sessions,
        unit_id=path.unit_id,
        marker_id=marker_id,
        live_after=live_after(),
    )
    if services().has_class_times and rows:
        for row in rows:
            row["unit_id"] = path.unit_id
        first = min(r["start_time"] for r in rows)
        split_sessions(Scope(first, services().clock(), unit_id=path.unit_id), rows)
    return {"unit_id": path.unit_id, "sessions": rows}


@unit_report("sessions", s.SessionsQuery, s.SessionsPage)
def unit_sessions(path: s.UnitPath, query: s.SessionsQuery) -> Any:
    """The unit's sessions that started in the range, newest first, a page at a time.

    Open sessions show their running duration and `end_time` null; `active` is true while
    the session is live (last activity within the session timeout of now).
    """
    scope, range_out = unit_scope(path.unit_id, query)
    result = _sessions_page(scope, query)
    return _sessions_reply(f"unit-{path.unit_id}-sessions", {"range": range_out, **result}, query)


@unit_report("summary", s.WhatIfQuery, s.SummaryOut)
def summary(path: s.UnitPath, query: s.WhatIfQuery) -> Any:
    """Per tutor: sessions, minutes, assessments and minutes per assessment; and totals.

    A tutor's overlapping sessions (two IPs at once) are merged before their minutes are
    summed, so no minute counts twice. With `timeout`, sessions are cut afresh from the
    activities under that inactivity timeout (what if).
    """
    scope, range_out = unit_scope(path.unit_id, query)
    if query.timeout is None:
        result = unit_summary(scope, timetable_of(scope))
    else:
        result = what_if(whatif.summary, scope, seconds=query.timeout)
    if query.format == "csv":
        total = {"marker_id": "total", **result["totals"]}
        rows = [
            {
                **r,
                "hours": csv_export.hours(r["minutes"]),
                "from": csv_export.instant(range_out["start"]),
                "to": csv_export.instant(range_out["end"]),
                "timezone": query.tz,
            }
            for r in [*result["tutors"], total]
        ]
        columns = [
            "marker_id",
            "sessions",
            "minutes",
            "hours",
            "assessments",
            "minutes_per_assessment",
            *(csv_export.SPLIT_COLUMNS if "during_class_minutes" in result["totals"] else []),
            *(csv_export.STUDENT_COLUMNS if "students" in result["totals"] else []),
            "from",
            "to",
            "timezone",
        ]
        return csv_response(f"unit-{path.unit_id}-summary", columns, rows)
    return {"unit_id": path.unit_id, "range": range_out, **result}


@unit_report("tasks", s.UnitReportQuery, s.TasksOut)
def tasks(path: s.UnitPath, query: s.UnitReportQuery) -> Any:
    """Per task definition: assessments, tasks, markers and estimated minutes.

    Each session's minutes are shared equally among that session's assessments.
    """
    scope, range_out = unit_scope(path.unit_id, query)
    rows = report(reports.tasks, scope)
    if query.format == "csv":
        columns = [
            "task_definition_id",
            "assessments",
            "tasks",
            "markers",
            "estimated_minutes",
            "estimated_hours",
        ]
        return csv_response(
            f"unit-{path.unit_id}-tasks",
            columns,
            ({**r, "estimated_hours": csv_export.hours(r["estimated_minutes"])} for r in rows),
        )
    return {"unit_id": path.unit_id, "range": range_out, "tasks": rows}


@unit_report("timeline", s.TimelineQuery, s.TimelineOut)
def timeline(path: s.UnitPath, query: s.TimelineQuery) -> Any:
    """Minutes, sessions and assessments per day or week, in `tz`.

    A session counts in the bucket its start lies in; a tutor's overlapping sessions are
    merged over the whole range (as in the summary) and each merged block's minutes count in
    the bucket the block starts in, so the buckets add up to the summary. Every bucket of
    the range is listed.
    """
    scope, range_out = unit_scope(path.unit_id, query)
    if query.timeout is None:
        buckets = timeline_buckets(scope, query.zone(), query.bucket, timetable_of(scope))
    else:
        tz = query.zone()
        starts = ranges.day_starts(scope.start, scope.end, tz, query.bucket)
        buckets = what_if(whatif.timeline, scope, starts, tz, seconds=query.timeout)
    if query.format == "csv":
        columns = ["start_date", "timezone", "minutes", "hours", "sessions", "assessments"]
        if buckets and "during_class_minutes" in buckets[0]:
            columns[4:4] = csv_export.SPLIT_COLUMNS
        return csv_response(
            f"unit-{path.unit_id}-timeline-{query.bucket}",
            columns,
            (
                {
                    **b,
                    "start_date": b["start"],
                    "timezone": query.tz,
                    "hours": csv_export.hours(b["minutes"]),
                }
                for b in buckets
            ),
        )
    return {"unit_id": path.unit_id, "range": range_out, "bucket": query.bucket, "buckets": buckets}


@api.route("GET", "/sessions/{session_id}", path=s.SessionPath, response=s.SessionDetail)
def session(path: s.SessionPath) -> Any:
    """One session with every activity in it.

    Convenors and admins of its unit may see it; a tutor only their own. Any other session
    is a 404, exactly as if it did not exist.
    """
    detail = report(reports.session_detail, path.session_id, live_after=live_after())
    # One answer for a session that does not exist and one the user may not see, so ids
    # cannot be probed for other tutors' sessions.
    hidden = ApiError(404, "no such session", "session_id")
    if detail is None:
        raise hidden
    try:
        marker_scope(detail["unit_id"], detail["marker_id"])
    except ApiError as exc:
        if exc.code != 403:
            raise
        raise hidden from None
    one = Scope(detail["start_time"], detail["last_activity"], unit_id=detail["unit_id"])
    split_sessions(one, [detail])
    return detail


@api.route(
    "GET",
    "/me/sessions",
    query=s.MySessionsQuery,
    response=s.MySessionsOut,
    csv=True,
    tag="tutors",
)
def my_sessions(query: s.MySessionsQuery) -> Any:
    """The current user's own sessions across units (or in one), newest first."""
    me = current_user_id()
    start, end = date_range(query)
    result = _sessions_page(Scope(start, end, unit_id=query.unit_id, marker_id=me), query)
    reply = {"marker_id": me, "range": _range_out(start, end, query), **result}
    return _sessions_reply("my-sessions", reply, query)


@api.route(
    "POST",
    "/activities",
    body=s.ActivityIn,
    response=s.ActivityCreated,
    status=201,
    tag="tutors",
)
def report_activity(body: s.ActivityIn) -> Any:
    """Report an activity of the current user, e.g. a heartbeat while reading a submission.

    The marker is always the current user and the IP the request's; only the unit's
    tutors, convenors and admins are tracked (R7). What a client reports is limited (R11):
    only the actions of TUTOR_TIMES_CLIENT_ACTIONS (never `assessing`), only ids the host
    confirms as the unit's, `at` within the backdating window; it is stored as `client`.

    With an `Idempotency-Key` header, a retry returns the first answer (status and body, with
    `Idempotent-Replayed: true`) and stores nothing; the same key with another body is a 422,
    and a retry while the first request is still being served waits for it (a 409 after 5 s).
    Keys are per user and kept for TUTOR_TIMES_IDEMPOTENCY_TTL; a request that failed leaves
    its key free. A connection the database drops meanwhile (a restart) is replaced and the
    key's claim, answer or release made on the new one. Should the database fail past that,
    a stored activity is still a 201 and a request that stored nothing keeps its own error
    (logged and counted), but the key stays claimed without an answer: a retry is a 409 for
    2 minutes, after which the claim counts as abandoned and a retry is served afresh (and
    stores the activity, a second time if the first request had stored it).
    """
    me = current_user_id()
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return _report_activity(me, body)
    if not idempotency.valid_key(key):
        raise ApiError(
            400,
            f"{IDEMPOTENCY_HEADER}: 1 to {idempotency.MAX_KEY_LENGTH} printable ASCII characters",
            IDEMPOTENCY_HEADER,
        )
    keys = services().state.idempotency
    claim = idempotency.Claim(idempotency.ACTIVITIES, me, key)
    try:
        with _storing():
            first = keys.claim(claim, idempotency.fingerprint(body.model_dump(mode="json")))
    except idempotency.KeyReused:
        raise ApiError(
            422, "this Idempotency-Key was used with another request", IDEMPOTENCY_HEADER
        ) from None
    except idempotency.KeyInUse:
        raise ApiError(
            409, "a request with this Idempotency-Key is still in progress", IDEMPOTENCY_HEADER
        ) from None
    if first is not None:
        replay = Response(first.body, status=first.status, mimetype="application/json")
        replay.headers["Idempotent-Replayed"] = "true"
        return replay
    try:
        response = jsonify(_report_activity(me, body).model_dump(mode="json"))
    except BaseException:
        _release(keys, claim)
        raise
    response.status_code = 201
    try:
        keys.complete(claim, idempotency.Answer(201, response.get_data(as_text=True)))
    except sa.exc.SQLAlchemyError:
        # The activity is stored: answer as such. A 500 would ask for a retry, and a retry
        # once the key is abandoned would store the activity a second time.
        services().count_failure("report")
        logger.exception("could not keep the answer for an Idempotency-Key; answered anyway")
    return response


def _release(keys: idempotency.IdempotencyKeys, claim: idempotency.Claim) -> None:
    """Free the key of a request that stored nothing. Should the database refuse even that,
    the request's own error is still the answer (never a 500 in its place), and the key
    stays held until it is abandoned (:data:`~tutor_times.store.idempotency.ABANDONED_AFTER`):
    logged and counted."""
    try:
        keys.release(claim)
    except sa.exc.SQLAlchemyError:
        services().count_failure("report")
        logger.exception(
            "could not release an Idempotency-Key; it is held for %d s",
            idempotency.ABANDONED_AFTER.total_seconds(),
        )


@contextmanager
def _storing() -> Iterator[None]:
    """A database failure while a reported activity (or its Idempotency-Key) is stored is a
    503 that says to try again: counted, logged, and nothing half-written kept."""
    try:
        yield
    except sa.exc.SQLAlchemyError:
        services().count_failure("report")
        logger.exception("could not store a reported activity")
        raise ApiError(503, "the activity could not be stored; try again") from None


def _report_activity(me: int, body: s.ActivityIn) -> s.ActivityCreated:
    """Record the reported activity; the reply as its response model, so an answer kept for
    an Idempotency-Key is serialized exactly as any other."""
    ext = services()
    with _storing():
        # the host's role_loader may read its database: a failure there is a 503 too
        tracked = ext.host_read(lambda: ext.is_tracked_role(current_user, body.unit_id))
    if not tracked:
        raise ApiError(403, "only the unit's tutors, convenors and admins are tracked", "unit_id")
    try:
        with _storing():
            activity = ext.record_client_activity(
                body.action,
                marker_id=me,
                unit_id=body.unit_id,
                ip_address=request.remote_addr,
                project_id=body.project_id,
                task_id=body.task_id,
                task_definition_id=body.task_definition_id,
                at=body.at,
            )
    except UnknownReferenceError as exc:
        raise ApiError(404, exc.message, exc.field) from None
    except InvalidActivityError as exc:
        raise ApiError(400, exc.message, exc.field) from None
    row = {**reports.activity_row(activity), "marker_id": me, "unit_id": body.unit_id}
    return s.ActivityCreated.model_validate(row)


@api.route(
    "GET",
    "/health",
    response=s.HealthOut,
    tag="meta",
    public=True,
    responses={
        503: ("A check failed; `checks` says which.", s.HealthOut),
        401: ("Not logged in, with TUTOR_TIMES_HEALTH_PUBLIC off.", None),
    },
)
def health_check() -> Any:
    """Whether this process can track: the database, Redis, and the worker's last heartbeat.

    200 with `status: ok` when every check passes, 503 with `status: fail` otherwise, for a
    load balancer; each check's status, time and kind of failure, for a person. Redis is
    "not used" with TUTOR_TIMES_STORE = "sql". The worker's heartbeat age fails the check
    only past TUTOR_TIMES_HEALTH_MAX_HEARTBEAT_AGE. Public unless TUTOR_TIMES_HEALTH_PUBLIC
    is off. Every wait is bounded (TUTOR_TIMES_SQL_TIMEOUT, Redis's socket timeout).
    """
    ext = services()
    state = ext.state
    if not state.settings.operations.health_public:
        current_user_id()
    checks = health.check(state, ext.tracking_engine, ext.models.Jobs, ext.clock())
    # built by its response model, as every other reply is (instants as ISO with a Z); a
    # check's fields it did not give stay out of the body rather than showing as null
    body = s.HealthOut.model_validate(checks).model_dump(mode="json", exclude_unset=True)
    response = jsonify(body)
    response.status_code = 200 if body["status"] == health.OK else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@api.route(
    "GET",
    "/metrics",
    tag="meta",
    public=True,
    responses={
        401: ("No bearer token, or the wrong one.", None),
        403: ("Signed in, but not staff (the host's staff_loader).", None),
        404: ("Metrics are off (TUTOR_TIMES_METRICS).", None),
    },
)
def prometheus_metrics() -> Any:
    """Prometheus metrics, in its text format; a 404 unless TUTOR_TIMES_METRICS is on.

    A scraper sends `Authorization: Bearer <TUTOR_TIMES_METRICS_TOKEN>`; a signed-in user the
    host's `staff_loader` accepts needs no token; with TUTOR_TIMES_METRICS_PUBLIC on, the
    host protects the endpoint itself. Under several
    processes the values are added up across them (PROMETHEUS_MULTIPROC_DIR).
    """
    ext = services()
    settings = ext.state.settings.operations
    if not settings.metrics:
        raise ApiError(404, "metrics are off (TUTOR_TIMES_METRICS)")
    if not settings.metrics_public and not _bearer_matches(settings.metrics_token):
        if not current_user or not current_user.is_authenticated:
            refused: Response = error_response(ApiError(401, "a bearer token is required"))[0]
            refused.status_code = 401
            refused.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return refused
        if not ext.is_staff(current_user):
            raise ApiError(
                403, "only the site's staff (the host's staff_loader) or the bearer token"
            )
    text, content_type = metrics.exposition()
    return Response(text, mimetype=None, content_type=content_type)


def _bearer_matches(token: str | None) -> bool:
    if token is None:
        return False
    sent = request.headers.get("Authorization", "")
    return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


@api.route("GET", "/openapi.json", response=s.OpenApiOut, tag="meta", public=True)
def openapi() -> Any:
    """The OpenAPI 3.1 document of these endpoints, from the schemas that validate them."""
    prefix = current_app.config["TUTOR_TIMES_URL_PREFIX"].rstrip("/")
    return api.openapi(prefix)
