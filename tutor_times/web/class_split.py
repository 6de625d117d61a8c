"""What the endpoints add to a report for class times (R12) and student counts: the host's
timetable for a report's range and units, and the split of its sessions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from .. import reports
from ..app.services import services
from ..reports.scope import Scope
from ..store import class_store, class_times
from . import csv_export, ranges
from . import schemas as s
from .api import ApiError
from .connections import later, report
from .csv_export import csv_response
from .views import live_after

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
