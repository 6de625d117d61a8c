"""The dashboard pages: a unit's marking time, or one's own, on one HTML page.

Every number on them comes from the report functions the JSON endpoints run, through the
same helpers (:mod:`.views`), so a page and the API cannot disagree; the one difference is
the calendar's, which asks the sessions page for each session's assessments alone (held to
the JSON's by ``tests/integration/test_dashboard.py``). The long tables and charts are rendered by
:mod:`.html`. The pages answer in HTML, errors included; they are served only while
``TUTOR_TIMES_DASHBOARD`` is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app, redirect, render_template, request, url_for
from flask_login import current_user
from flask_login.utils import login_url
from markupsafe import Markup
from pydantic import BaseModel

from .. import reports
from ..app.services import services
from ..reports import whatif
from ..reports.scope import Scope
from ..store import class_times
from ..store.class_times import Timetable
from . import calendar, csv_export, html
from . import schemas as s
from .api import ApiError, FieldError, parse, query_args
from .class_split import add_students, later_timeline, timetable_of, unit_summary
from .connections import later, one_connection, report, what_if
from .ranges import ZONES
from .views import (
    RETRY_AFTER_S,
    UNAVAILABLE,
    bp,
    current_user_id,
    date_range,
    live_after,
    marker_scope,
    roll_back_host_session,
    unavailable,
)

logger = logging.getLogger("tutor_times")

#: the most sessions the calendar draws; past it, the newest, and the page says so
CALENDAR_LIMIT = 2000
#: ranges up to this many days are shown per day by default, longer ones per week
DAYS_BY_DEFAULT = 31
#: how often the "marking now" panel asks again, in milliseconds
LIVE_EVERY_MS = 5000
#: the sorted zone names offered by the picker, computed once
ZONE_NAMES = sorted(ZONES)
#: the picker's list of zones as HTML, rendered once: 600 options on every page otherwise
ZONE_OPTIONS = Markup("").join(Markup('<option value="{}">').format(z) for z in ZONE_NAMES)
#: the what-if picker's inactivity timeouts, in seconds (the configured one is added)
WHAT_IF_TIMEOUTS = (60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200)


def _error_page(status: int, message: str) -> Any:
    return render_template("tutor_times/error.html", status=status, message=message), status


def _anonymous() -> Any:
    """The host's login page when it has one (coming back here after), else a 401 page."""
    view = getattr(current_app, "login_manager", None)
    login_view = getattr(view, "login_view", None)
    if login_view:
        return redirect(login_url(login_view, request.full_path.rstrip("?")))
    return _error_page(401, "Log in to see marking times.")


def _page(model: type[BaseModel], build: Callable[[Any], dict[str, Any]]) -> Any:
    """Render the dashboard for the query string, or the HTML page of what went wrong (a
    database that went away while the page read: a 503 with Retry-After)."""
    try:
        return _rendered(model, build)
    except sa.exc.SQLAlchemyError as exc:
        if not unavailable(exc):
            raise
        logger.warning("answered 503: %s", exc.__class__.__name__, exc_info=exc)
        roll_back_host_session()
        # rendered without the app's context processors: the host's (its signed-in user,
        # say) would read the database that just failed
        page = current_app.jinja_env.get_template("tutor_times/error.html").render(
            status=503, message=UNAVAILABLE
        )
        return page, 503, {"Retry-After": str(RETRY_AFTER_S)}


def _rendered(model: type[BaseModel], build: Callable[[Any], dict[str, Any]]) -> Any:
    if not services().state.settings.dashboard:
        return _error_page(404, "There is no such page.")
    if not current_user or not current_user.is_authenticated:
        return _anonymous()
    try:
        query = parse(model, query_args(model))
        if query.format != "json":
            raise ApiError(400, "format: the page is HTML; its tables link their CSV", "format")
        # the page's reports on one snapshot: some on a second connection, beside the rest
        with one_connection(beside=True):
            context = build(query)
    except FieldError as exc:
        return _error_page(400, f"{exc.field}: {exc.message}")
    except ApiError as exc:
        return _error_page(exc.code or 400, str(exc.description))
    return render_template("tutor_times/dashboard.html", **context)


@bp.get("/units/<int:unit_id>/dashboard")
def unit_dashboard(unit_id: int) -> Any:
    """A unit's marking time: every tutor's for its convenors and admins, a tutor's own."""

    def build(query: s.DashboardQuery) -> dict[str, Any]:
        marker_id = marker_scope(unit_id, query.marker_id)
        start, end = date_range(query)
        scope = Scope(start, end, unit_id=unit_id, marker_id=marker_id)
        live = url_for(".active", unit_id=unit_id)
        links = _csv_links(query, unit_id=unit_id, marker_id=marker_id)
        return _context(
            scope,
            query,
            what_if_seconds=query.timeout,
            timeout_choices=_timeout_choices(query.timeout),
            title=services().unit_names_of([unit_id])[unit_id],
            live_url=live,
            links=links,
        )

    return _page(s.DashboardQuery, build)


@bp.get("/me/dashboard")
def my_dashboard() -> Any:
    """The current user's own marking time, across units or in one."""

    def build(query: s.MyDashboardQuery) -> dict[str, Any]:
        me = current_user_id()
        start, end = date_range(query)
        scope = Scope(start, end, unit_id=query.unit_id, marker_id=me)
        yesterday = (services().clock() - timedelta(days=1)).date().isoformat()
        live_args: dict[str, Any] = {"from": yesterday, "per_page": 100, "unit_id": query.unit_id}
        live = url_for(".my_sessions", **live_args)
        if query.unit_id is None:
            links = dict.fromkeys(("summary", "timeline", "tasks"), _my_csv(query))
            links["sessions"] = links["summary"]
        else:
            links = _csv_links(query, unit_id=query.unit_id, marker_id=me)
        if query.unit_id is None:
            title = "My marking"
        else:
            title = f"My marking in {services().unit_names_of([query.unit_id])[query.unit_id]}"
        return _context(scope, query, title=title, live_url=live, links=links)

    return _page(s.MyDashboardQuery, build)


def _range_args(query: s.RangeQuery) -> dict[str, Any]:
    args: dict[str, Any] = {"tz": query.tz, "format": "csv"}
    if query.from_ is not None:
        args["from"] = query.from_.isoformat()
    if query.to is not None:
        args["to"] = query.to.isoformat()
    return args


def _csv_links(query: Any, *, unit_id: int, marker_id: int | None) -> dict[str, str]:
    """The CSV download of each table: the report endpoint with the page's range."""
    args = _range_args(query)
    if marker_id is not None:
        args["marker_id"] = marker_id
    bucket = query.bucket or "day"
    return {
        "summary": url_for(".summary", unit_id=unit_id, **args),
        "timeline": url_for(".timeline", unit_id=unit_id, bucket=bucket, **args),
        "tasks": url_for(".tasks", unit_id=unit_id, **args),
        "sessions": url_for(".unit_sessions", unit_id=unit_id, per_page=500, **args),
    }


def _my_csv(query: s.MyDashboardQuery) -> str:
    return url_for(".my_sessions", unit_id=query.unit_id, per_page=500, **_range_args(query))


def _local_dates(start: datetime, end: datetime, tz: ZoneInfo) -> tuple[date, date]:
    return start.astimezone(tz).date(), (end - timedelta(microseconds=1)).astimezone(tz).date()


#: what every page's template is given besides its reports
PAGE_HELPERS: dict[str, Any] = {
    "zone_options": ZONE_OPTIONS,
    "cell": html.cell,
    "day_label": html.day_label,
    "timeline_chart": html.timeline_chart,
    "timeline_rows": html.timeline_rows,
    "live_every_ms": LIVE_EVERY_MS,
    "hours": csv_export.hours,
}


def _context(
    scope: Scope, query: Any, *, what_if_seconds: int | None = None, **page: Any
) -> dict[str, Any]:
    """Everything the page shows, from the report functions the JSON endpoints run.

    ``what_if_seconds``: the unit page's what-if timeout (None: off; absent: no picker)."""
    tz = query.zone()
    first, last = _local_dates(scope.start, scope.end, tz)
    bucket = query.bucket or ("day" if (last - first).days < DAYS_BY_DEFAULT else "week")
    # the host's timetable, asked once for the summary, the timeline and the calendar
    timetable = timetable_of(scope)
    # the tasks and the timeline read on a second connection while the summary and the
    # calendar read on the page's (:func:`.connections.later`)
    tasks = later(reports.tasks, scope)
    timeline = later_timeline(scope, tz, bucket, timetable)
    summary = unit_summary(scope, timetable)
    what_if = None if what_if_seconds is None else _what_if(scope, what_if_seconds, summary)
    week, active = _week(scope, tz, timetable), _active(scope)
    shown = [t["marker_id"] for t in summary["tutors"]]
    shown += [b.marker_id for b in week.blocks] + [a["marker_id"] for a in active]
    if scope.marker_id is not None:
        shown.append(scope.marker_id)
    # one call for every tutor on the page, never one per row
    names = services().names_of(shown)
    colours = calendar.colours_of(names)
    # the columns of class times (R12) and of students, when the host gives them
    split = "during_class_minutes" in summary["totals"]
    per_student = "students" in summary["totals"]
    # the long tables and the calendar, written while the second connection still reads
    rendered = {
        "tutor_rows": html.tutor_rows(
            summary["tutors"], names, split=split, per_student=per_student, what_if=what_if
        ),
        "calendar_lessons": html.calendar_lessons(week, names),
        "calendar_blocks": html.calendar_blocks(week, names, colours),
        "legend": html.legend(week, names, colours),
        "calendar_rows": html.calendar_rows(week, names, split=split),
    }
    return {
        "timeout_choices": None,  # the unit page's what-if picker; one's own page has none
        **page,
        "names": names,
        "split": split,
        "per_student": per_student,
        "rendered": rendered,
        "query": query,
        "tz": query.tz,
        "zone": tz,
        "first_day": first,
        "last_day": last,
        "bucket": bucket,
        "summary": summary,
        "timeline": timeline(),
        "tasks": tasks(),
        "week": week,
        "active": active,
        "presets": _presets(last),
        "what_if": what_if,
        **PAGE_HELPERS,
    }


def _what_if(scope: Scope, seconds: int, summary: dict[str, Any]) -> dict[str, Any]:
    """Each tutor's minutes under another timeout: ``summary?timeout=``'s report, run once.

    A tutor with sessions only under the what-if timeout is added to ``summary`` with none
    stored, so the table has a row for everyone either report counts; the row has the
    columns the others have (the split, the students), at 0 minutes."""
    result = what_if(whatif.summary, scope, seconds=seconds)
    minutes = {t["marker_id"]: t["minutes"] for t in result["tutors"]}
    stored = {t["marker_id"] for t in summary["tutors"]}
    for marker in sorted(minutes.keys() - stored):
        summary["tutors"].append(_no_stored_minutes(marker, summary["totals"], scope))
    configured = int(services().state.timeout.total_seconds())
    return {
        "label": timeout_label(seconds),
        "configured_label": timeout_label(configured),
        "minutes": minutes,
        "totals": result["totals"],
    }


def _no_stored_minutes(marker: int, totals: dict[str, Any], scope: Scope) -> dict[str, Any]:
    """A summary row of a tutor with no stored minutes in ``scope``, with the split and
    the students when the summary's totals have them."""
    row = reports.with_rate({"marker_id": marker, "sessions": 0, "assessments": 0}, 0)
    if "during_class_minutes" in totals:
        class_times.with_split(row, 0)
    if "students" in totals and scope.unit_id is not None:
        add_students(scope.unit_id, marker, row)
    return row


def timeout_label(seconds: int) -> str:
    """``900`` as "15 min", ``90`` as "90 s"."""
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def _timeout_choices(chosen: int | None) -> list[tuple[int, str]]:
    """The what-if picker's options: common timeouts, the configured one (so named) and the
    one in the URL, in order."""
    configured = int(services().state.timeout.total_seconds())
    shown = sorted({*WHAT_IF_TIMEOUTS, configured, *([chosen] if chosen else [])})
    return [
        (seconds, timeout_label(seconds) + (" (configured)" if seconds == configured else ""))
        for seconds in shown
    ]


def _week(scope: Scope, tz: ZoneInfo, timetable: Timetable | None) -> calendar.Week:
    """The calendar: the sessions of the range's last (up to) seven days, split by the
    range's ``timetable``."""
    days = calendar.calendar_days(scope.start, scope.end, tz)
    since = calendar.first_instant(days, scope.start, tz)
    shown = Scope(since, scope.end, unit_id=scope.unit_id, marker_id=scope.marker_id)
    page = report(
        reports.sessions_page,
        shown,
        page=1,
        per_page=CALENDAR_LIMIT,
        live_after=live_after(),
        by_action=False,
    )
    rows = page["sessions"]
    shaded = calendar.UNSHADED
    if timetable is not None:
        class_times.split_rows(rows, timetable)
        # a tutor's own page of a unit: their classes and every tutor's
        own = scope.marker_id if scope.unit_id is not None else None
        shaded = timetable.kept(
            ("calendar", since, scope.end, tz, own),
            lambda: _shading(timetable, since, scope.end, days, tz, own),
        )
    return calendar.week(rows, days, tz, services().clock(), page["total"], shaded)


def _shading(
    timetable: Timetable,
    since: datetime,
    end: datetime,
    days: list[date],
    tz: ZoneInfo,
    own: int | None,
) -> calendar.Shading:
    """The classes the calendar shades, from the same answer of the host's loader as the
    split's: those of ``own`` and every tutor's when it is a tutor's own page of a unit."""
    classes = timetable.classes(since, end)
    if own is not None:
        classes = [c for c in classes if c[0] in (None, own)]
    return calendar.shading(classes, days, tz)


def _active(scope: Scope) -> list[dict[str, Any]]:
    """Who is marking now, as the page is rendered (the page's script keeps it fresh)."""
    if scope.unit_id is None:
        return []  # one's own page: the script asks for one's live sessions across units
    return report(
        reports.active_sessions,
        unit_id=scope.unit_id,
        marker_id=scope.marker_id,
        live_after=live_after(),
    )


def _presets(today: date) -> list[tuple[str, str]]:
    """Links to common ranges ending on the page's last day, keeping the other choices."""
    keep = {k: v for k, v in request.args.items() if k not in ("from", "to", "bucket")}
    out = []
    for label, days in (("7 days", 7), ("4 weeks", 28), ("12 weeks", 84)):
        try:
            first = today - timedelta(days=days - 1)
        except OverflowError:
            continue  # a range at the start of the calendar: no earlier days to offer
        args: dict[str, Any] = {**keep, "from": first.isoformat(), "to": today.isoformat()}
        out.append((label, url_for(request.endpoint or "", **request.view_args or {}, **args)))
    return out
