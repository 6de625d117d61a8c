"""The dashboard's weekly calendar: sessions placed on days × hours of a time zone, laid out
for an SVG. Pure arithmetic on the rows ``reports.sessions_page`` returns."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..core.accounting import UTC

#: the most days one calendar shows: a week, so a block stays wide enough to point at
MAX_DAYS = 7
#: the SVG's geometry, in viewBox units
AXIS = 44.0
DAY_WIDTH = 100.0
HOUR_HEIGHT = 28.0
HEAD = 26.0
#: the shortest block drawn, so a one-minute session can still be seen and pointed at
MIN_BLOCK = 4.0
#: the hours always shown, so an empty or early-evening week still reads as a working day
DAY_HOURS = (8, 18)
#: how many tutor colours the stylesheet defines (``tt-c0`` …); past them they repeat
COLOURS = 8


def colours_of(marker_ids: Iterable[int]) -> dict[int, int]:
    """Each tutor's colour on the page (an index into the stylesheet's COLOURS), by id
    order: the same tutor has the same colour in the calendar, its legend and the table."""
    return {marker: i % COLOURS for i, marker in enumerate(sorted(set(marker_ids)))}


def calendar_days(start: datetime, end: datetime, tz: ZoneInfo) -> list[date]:
    """The last (up to) MAX_DAYS local days of [start, end)."""
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    first = max(start.astimezone(tz).date(), last - timedelta(days=MAX_DAYS - 1))
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def first_instant(days: list[date], start: datetime, tz: ZoneInfo) -> datetime:
    """Where the calendar's sessions start: its first local midnight, or the range's start
    when that is later (a range given as instants)."""
    midnight = datetime.combine(days[0], time(), tzinfo=tz).astimezone(UTC)
    return max(midnight, start)


@dataclass
class Block:
    """One session on the calendar."""

    session_id: int
    marker_id: int
    day: int
    #: minutes after the day's local midnight
    top: float
    bottom: float
    start: datetime
    end: datetime
    minutes: int
    assessments: int
    #: live: drawn up to now, still growing
    running: bool
    #: goes on past midnight; drawn to the end of its first day
    continues: bool
    lane: int = 0
    lanes: int = 1
    #: of ``minutes``, those during scheduled classes (R12); None without class times
    during_class: int | None = None


@dataclass
class Lesson:
    """A scheduled class on the calendar (R12's classes), shaded behind the sessions."""

    #: the class's tutor; None: every tutor of the unit
    marker_id: int | None
    day: int
    top: float
    bottom: float
    start: datetime
    end: datetime


@dataclass
class Shading:
    """The scheduled classes of a calendar's days, laid on them once and kept with the
    timetable they come from (:meth:`~tutor_times.store.class_times.Timetable.kept`): every
    page of the same days of the same timetable shades the same classes, so a term's
    timetable of thousands is neither searched nor laid out again on each page. ``drawn``
    keeps their markup, by the calendar's first hour and the names of their tutors."""

    lessons: list[Lesson]
    #: each lesson's tutor, in order (what the markup names)
    markers: list[int | None]
    #: the earliest and latest minute of the day any lesson covers
    top: float
    bottom: float
    drawn: dict[tuple[Any, ...], str] = field(default_factory=dict)


#: no classes to shade
UNSHADED = Shading([], [], 24 * 60, 0)


def shading(
    classes: Iterable[tuple[int | None, datetime, datetime]], days: list[date], tz: ZoneInfo
) -> Shading:
    """The ``classes`` (marker_id or None, start, end) that start on ``days``, laid on them
    in ``tz``."""
    lessons = [x for x in (_lesson(*c, days, tz) for c in classes) if x is not None]
    if not lessons:
        return UNSHADED
    lessons.sort(key=lambda x: (x.day, x.top, x.bottom))
    return Shading(
        lessons,
        [x.marker_id for x in lessons],
        min(x.top for x in lessons),
        max(x.bottom for x in lessons),
    )


@dataclass
class Week:
    days: list[date]
    blocks: list[Block]
    first_hour: int
    last_hour: int
    #: sessions in the calendar's days, of which ``blocks`` holds the newest
    total: int
    hours: list[int] = field(default_factory=list)
    shaded: Shading = field(default_factory=lambda: UNSHADED)

    @property
    def lessons(self) -> list[Lesson]:
        return self.shaded.lessons

    @property
    def width(self) -> float:
        return AXIS + DAY_WIDTH * len(self.days)

    @property
    def height(self) -> float:
        return HEAD + HOUR_HEIGHT * (self.last_hour - self.first_hour)

    def y(self, minutes: float) -> float:
        return HEAD + (minutes / 60 - self.first_hour) * HOUR_HEIGHT

    def rect(self, block: Block) -> dict[str, float]:
        """The block's rectangle: its day's column shared among overlapping blocks."""
        lane_width = DAY_WIDTH / block.lanes
        top = self.y(block.top)
        return {
            "x": round(AXIS + block.day * DAY_WIDTH + block.lane * lane_width + 1, 2),
            "y": round(top, 2),
            "width": round(max(lane_width - 2, 1), 2),
            "height": round(max(self.y(block.bottom) - top, MIN_BLOCK), 2),
        }

    def shade(self, lesson: Lesson) -> dict[str, float]:
        """A class's rectangle: its day's whole column, behind the blocks."""
        top = self.y(lesson.top)
        return {
            "x": AXIS + lesson.day * DAY_WIDTH,
            "y": round(top, 2),
            "width": DAY_WIDTH,
            "height": round(max(self.y(lesson.bottom) - top, 1), 2),
        }


def _minutes(t: datetime) -> float:
    return t.hour * 60 + t.minute + t.second / 60


def _lesson(
    marker_id: int | None, start: datetime, end: datetime, days: list[date], tz: ZoneInfo
) -> Lesson | None:
    """A class in the calendar's days, drawn to the end of its first day (as blocks are)."""
    start, end = start.astimezone(tz), end.astimezone(tz)
    day = (start.date() - days[0]).days
    if not 0 <= day < len(days):
        return None
    bottom = 24 * 60 if end.date() > start.date() else _minutes(end)
    return Lesson(marker_id, day, _minutes(start), max(bottom, _minutes(start)), start, end)


def _block(row: dict[str, Any], days: list[date], tz: ZoneInfo, now: datetime) -> Block | None:
    start = row["start_time"].astimezone(tz)
    if row["end_time"] is not None:
        end = row["end_time"]
    else:
        # a live session runs on to now; an idle one that no sweep closed yet ended at its
        # last activity (R3)
        end = max(now, row["last_activity"]) if row["active"] else row["last_activity"]
    end = end.astimezone(tz)
    day = (start.date() - days[0]).days
    if not 0 <= day < len(days):
        return None
    top = start.hour * 60 + start.minute + start.second / 60
    continues = end.date() > start.date()
    bottom = 24 * 60 if continues else end.hour * 60 + end.minute + end.second / 60
    # positional, in the fields' order (a week has hundreds of blocks)
    return Block(
        row["id"],
        row["marker_id"],
        day,
        top,
        max(bottom, top),
        start,
        end,
        row["duration_minutes"],
        row["assessments"],
        bool(row["active"]),
        continues,
        0,
        1,
        row.get("during_class_minutes"),
    )


def _lay_out(blocks: list[Block]) -> None:
    """Side by side where they overlap: each group of overlapping blocks of a day shares
    its column in as many lanes as it needs at once."""
    blocks.sort(key=lambda b: (b.day, b.top, b.bottom))
    group: list[Block] = []
    lane_ends: list[float] = []

    def close() -> None:
        for b in group:
            b.lanes = len(lane_ends)
        group.clear()
        lane_ends.clear()

    for b in blocks:
        if group and (b.day != group[0].day or b.top >= max(lane_ends)):
            close()
        free = next((i for i, e in enumerate(lane_ends) if e <= b.top), None)
        if free is None:
            lane_ends.append(b.bottom)
            b.lane = len(lane_ends) - 1
        else:
            lane_ends[free] = b.bottom
            b.lane = free
        group.append(b)
    close()


def week(
    rows: Iterable[dict[str, Any]],
    days: list[date],
    tz: ZoneInfo,
    now: datetime,
    total: int,
    shaded: Shading = UNSHADED,
) -> Week:
    """The calendar of ``rows`` (sessions that start on ``days``) in ``tz``, with the
    scheduled classes of those days (:func:`shading`) behind them."""
    blocks = [b for b in (_block(r, days, tz, now) for r in rows) if b is not None]
    _lay_out(blocks)
    tops = [shaded.top, *(b.top for b in blocks)]
    bottoms = [shaded.bottom, *(b.bottom for b in blocks)]
    first = min(DAY_HOURS[0], math.floor(min(tops) / 60))
    last = max(DAY_HOURS[1], math.ceil(max(bottoms) / 60))
    shown = Week(days, blocks, first, min(last, 24), total, shaded=shaded)
    shown.hours = list(range(shown.first_hour, shown.last_hour + 1))
    return shown
