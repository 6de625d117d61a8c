"""The JSON report endpoints: a unit's live sessions, sessions, summary, tasks and timeline,
one session, and a tutor's own sessions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import reports
from ..app.services import services
from ..reports import whatif
from ..reports.scope import Scope
from . import csv_export, ranges
from . import schemas as s
from .api import ApiError
from .class_split import (
    _sessions_page,
    _sessions_reply,
    split_sessions,
    timeline_buckets,
    timetable_of,
    unit_summary,
)
from .connections import report, what_if
from .csv_export import csv_response
from .views import (
    _range_out,
    api,
    current_user_id,
    date_range,
    live_after,
    marker_scope,
    unit_scope,
)

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
