"""The dashboard's long parts, rendered in Python: one call per table or chart.

A page over a term has about 2,000 table cells and a few hundred calendar blocks; as
template expressions each value cost a template call, an attribute lookup and an escape,
and the page took longer to render than its reports took to run. Here each row is one
f-string, numbers are written as they are (there is nothing in them to escape) and only
text goes through :func:`markupsafe.escape`. The markup is the template's, unchanged: the
page's script and tests read the same attributes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from markupsafe import Markup, escape

from .calendar import Block, Lesson, Week
from .csv_export import hours

#: the bar chart's drawing box
BARS_WIDTH, BARS_HEIGHT = 720, 150
#: the bars' baseline, the tallest bar and the dates' line, in the box's units
BASELINE, TALLEST, DATES = 125, 105, 142
#: names of days and months as ``strftime`` writes them in the C locale, looked up: a
#: week's calendar writes about 1,500 of them
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def clock(t: datetime) -> str:
    """``Mon 09:05``."""
    return f"{DAYS[t.weekday()]} {t.hour:02d}:{t.minute:02d}"


def day_label(d: date) -> str:
    """``Mon 2 Mar``."""
    return f"{DAYS[d.weekday()]} {d.day} {MONTHS[d.month - 1]}"


def day_clock(t: datetime) -> str:
    """``Mon 02 Mar 09:05``."""
    return f"{DAYS[t.weekday()]} {t.day:02d} {MONTHS[t.month - 1]} {t.hour:02d}:{t.minute:02d}"


def text(value: Any) -> str:
    """``value`` as HTML text: numbers as they are, anything else escaped."""
    if type(value) is int or type(value) is float:
        return str(value)
    return str(escape(value))


def cell(column: str, value: Any, shown: Any = None) -> Markup:
    """A table cell that keeps its raw value for sorting: ``data-value`` is empty and the
    cell shows "—" for None, unless ``shown`` says what to show. ``column`` is one of the
    page's own column names, written as it is."""
    return Markup(_cell(column, value, shown))


def _cell(column: str, value: Any, shown: Any = None, css: str = "") -> str:
    if type(value) is int and shown is None and not css:
        # most cells: a count, shown as it is (a page has thousands)
        return f'<td data-col="{column}" data-value="{value}">{value}</td>'
    raw = "" if value is None else text(value)
    shown_text = ("—" if value is None else raw) if shown is None else text(shown)
    attributes = f' class="{css}"' if css else ""
    return f'<td{attributes} data-col="{column}" data-value="{raw}">{shown_text}</td>'


def tutor_rows(
    tutors: Iterable[Mapping[str, Any]],
    names: Mapping[int, Any],
    *,
    split: bool,
    per_student: bool,
    what_if: Mapping[str, Any] | None,
) -> Markup:
    """The per-tutor table's body rows (the empty table's row stays in the template)."""
    rows = []
    changed = what_if["minutes"] if what_if else {}
    for t in tutors:
        marker, minutes = t["marker_id"], t["minutes"]
        cells = [
            _cell("marker_id", marker, names.get(marker, "")),
            _cell("sessions", t["sessions"]),
            _cell("minutes", minutes),
            _cell("hours", hours(minutes)),
            _cell("assessments", t["assessments"]),
            _cell("minutes_per_assessment", t["minutes_per_assessment"]),
        ]
        if split:
            cells.append(_cell("during_class_minutes", t["during_class_minutes"]))
            cells.append(_cell("outside_class_minutes", t["outside_class_minutes"]))
        if per_student:
            cells.append(_cell("students", t["students"]))
            cells.append(_cell("minutes_per_student", t["minutes_per_student"]))
        if what_if:
            # the tutor's minutes at the configured timeout and at the picker's
            cells.append(_cell("configured_minutes", minutes, css="tt-whatif"))
            cells.append(_cell("whatif_minutes", changed.get(marker, 0), css="tt-whatif"))
        rows.append(f'<tr data-row="{marker}" data-marker="{marker}">{"".join(cells)}</tr>')
    return Markup("\n".join(rows))


def block_name(b: Block, name: str) -> str:
    """What a block says on hover and to a screen reader: who, when, how long, what."""
    end = "now" if b.running else clock(b.end)
    during = "" if b.during_class is None else f" ({b.during_class} during class)"
    plural = "" if b.assessments == 1 else "s"
    still = " (still running)" if b.running else ""
    return (
        f"{name}: {clock(b.start)}–{end}, {b.minutes} min{during}, "
        f"{b.assessments} assessment{plural}{still}"
    )


def shown_names(week: Week, names: Mapping[int, Any]) -> dict[int, str]:
    """The name of each tutor in the calendar, escaped once (not once per session)."""
    return {m: text(names.get(m, "")) for m in {b.marker_id for b in week.blocks}}


def calendar_blocks(week: Week, names: Mapping[int, Any], colours: Mapping[int, int]) -> Markup:
    """The calendar's session rectangles in their tutor's colour, each named by its tooltip
    and its accessible name and, where it fits, by a label."""
    out = []
    shown = shown_names(week, names)
    for b in week.blocks:
        r = week.rect(b)
        x, y, width, height = r["x"], r["y"], r["width"], r["height"]
        name = shown[b.marker_id]
        running = " tt-running" if b.running else ""
        continues = ' data-continues="yes"' if b.continues else ""
        said = block_name(b, name)
        out.append(
            f'<rect class="tt-block tt-c{colours.get(b.marker_id, 0)}{running}" '
            f'data-session-id="{b.session_id}" data-marker="{b.marker_id}"{continues} '
            f'x="{x}" y="{y}" width="{width}" height="{height}" rx="2" '
            f'role="img" aria-label="{said}"><title>{said}</title></rect>'
        )
        if height >= 14 and width >= 70:
            in_class = f" ({b.during_class} in class)" if b.during_class else ""
            out.append(
                f'<text class="tt-label" x="{x + 3}" y="{y + 11}" '
                f'aria-hidden="true">{name} {b.minutes}m{in_class}</text>'
            )
    return Markup("\n".join(out))


def lesson_name(lesson: Lesson, names: Mapping[int, Any]) -> str:
    """``Class of Tutor One: Mon 10:30–12:30`` (escaped), or ``of every tutor``."""
    who = "every tutor" if lesson.marker_id is None else text(names.get(lesson.marker_id, ""))
    return f"Class of {who}: {clock(lesson.start)}–{clock(lesson.end)[4:]}"


def calendar_lessons(week: Week, names: Mapping[int, Any]) -> Markup:
    """The scheduled classes, shaded across their day's column behind the sessions: drawn
    once per first hour and names of their tutors, and kept with the classes
    (:class:`~.calendar.Shading`)."""
    shaded = week.shaded
    key = (week.first_hour, *(names.get(m, "") for m in shaded.markers if m is not None))
    try:
        drawn = shaded.drawn.get(key)
    except TypeError:  # a host's name that cannot be a key: drawn afresh
        return Markup(_lessons(week, names))
    if drawn is None:
        if len(shaded.drawn) >= DRAWINGS_KEPT:
            shaded.drawn.clear()  # names that changed: the next pages draw the new ones
        drawn = shaded.drawn[key] = _lessons(week, names)
    return Markup(drawn)


#: how many drawings of one calendar's classes are kept (by first hour and names)
DRAWINGS_KEPT = 4


def _lessons(week: Week, names: Mapping[int, Any]) -> str:
    out = []
    for lesson in week.lessons:
        r = week.shade(lesson)
        said = lesson_name(lesson, names)
        marker = "" if lesson.marker_id is None else f' data-marker="{lesson.marker_id}"'
        out.append(
            f'<rect class="tt-class"{marker} x="{r["x"]}" y="{r["y"]}" width="{r["width"]}" '
            f'height="{r["height"]}" role="img" aria-label="{said}"><title>{said}</title></rect>'
        )
    return "\n".join(out)


def legend(week: Week, names: Mapping[int, Any], colours: Mapping[int, int]) -> Markup:
    """Whose colour is whose, for the tutors in the calendar; and the classes' shade."""
    items = [
        f'<li data-marker="{marker}"><span class="tt-swatch tt-c{colours.get(marker, 0)}" '
        f'aria-hidden="true"></span>{text(names.get(marker, ""))}</li>'
        for marker in sorted({b.marker_id for b in week.blocks})
    ]
    if week.lessons:
        items.append(
            '<li data-legend="class"><span class="tt-swatch tt-class" aria-hidden="true">'
            "</span>Scheduled class</li>"
        )
    if any(b.running for b in week.blocks):
        items.append(
            '<li data-legend="running"><span class="tt-swatch tt-running-swatch" '
            'aria-hidden="true"></span>Still running</li>'
        )
    if not items:
        return Markup("")
    return Markup(f'<ul class="tt-legend" aria-label="Legend">{"".join(items)}</ul>')


def calendar_rows(week: Week, names: Mapping[int, Any], *, split: bool) -> Markup:
    """The calendar's sessions as table rows, in order of start."""
    rows = []
    shown = shown_names(week, names)
    for b in sorted(week.blocks, key=lambda b: b.start):
        end = "running" if b.running else day_clock(b.end)
        during = _cell("during_class_minutes", b.during_class) if split else ""
        rows.append(
            f'<tr data-row="{b.session_id}" data-marker="{b.marker_id}">'
            f"<td>{shown[b.marker_id]}</td>"
            f"<td>{day_clock(b.start)}</td><td>{end}</td>"
            f"{_cell('minutes', b.minutes)}{during}{_cell('assessments', b.assessments)}</tr>"
        )
    return Markup("\n".join(rows))


def timeline_chart(timeline: list[Mapping[str, Any]], bucket: str, *, split: bool) -> Markup:
    """The bar chart of minutes per ``bucket``: a bar each (the minutes during class drawn
    over it), its number when the bar is wide enough, and a date under every few."""
    top = max([1, *(b["minutes"] for b in timeline)])
    width = BARS_WIDTH / max(len(timeline), 1)
    # a date label about every 40 units
    every = math.ceil(40 / width) or 1
    bar = round(width * 0.7, 2)
    out = [
        f'<svg class="tt-bars" viewBox="0 0 {BARS_WIDTH} {BARS_HEIGHT}" role="img" '
        f'aria-label="Minutes per {text(bucket)}; the numbers are in the table below">',
        f'<line class="tt-grid" x1="0" x2="{BARS_WIDTH}" y1="{BASELINE}" y2="{BASELINE}"/>',
    ]
    for i, b in enumerate(timeline):
        minutes, start = b["minutes"], b["start"]
        height = round(minutes / top * TALLEST, 1)
        x = i * width
        at = round(x + width * 0.15, 2)
        during = f" ({b['during_class_minutes']} during class)" if split else ""
        out.append(
            f'<rect class="tt-bar" x="{at}" y="{BASELINE - height}" width="{bar}" '
            f'height="{height}"><title>{start.isoformat()}: {minutes} min{during}</title></rect>'
        )
        if split and b["during_class_minutes"]:
            inside = round(b["during_class_minutes"] / top * TALLEST, 1)
            out.append(
                f'<rect class="tt-bar-class" data-bucket="{i}" x="{at}" '
                f'y="{BASELINE - inside}" width="{bar}" height="{inside}"><title>'
                f"{start.isoformat()}: {b['during_class_minutes']} min during class</title></rect>"
            )
        middle = round(x + width / 2, 2)
        if minutes and width >= 16:
            out.append(
                f'<text class="tt-barnum" x="{middle}" y="{BASELINE - 4 - height}" '
                f'text-anchor="middle">{minutes}</text>'
            )
        if i % every == 0:
            out.append(
                f'<text class="tt-axis" x="{middle}" y="{DATES}" text-anchor="middle">'
                f"{start.day}/{start.month}</text>"
            )
    out.append("</svg>")
    return Markup("\n".join(out))


def timeline_rows(timeline: list[Mapping[str, Any]], *, split: bool) -> Markup:
    """The minutes per bucket as table rows."""
    rows = []
    for i, b in enumerate(timeline):
        during = ""
        if split:
            during = _cell("during_class_minutes", b["during_class_minutes"]) + _cell(
                "outside_class_minutes", b["outside_class_minutes"]
            )
        rows.append(
            f'<tr data-row="{i}">{_cell("start", b["start"].isoformat())}'
            f"{_cell('minutes', b['minutes'])}{during}{_cell('sessions', b['sessions'])}"
            f"{_cell('assessments', b['assessments'])}</tr>"
        )
    return Markup("\n".join(rows))
