"""R12: the minutes of a session (or of an R10 block) split into during-class and
outside-class minutes, from the host's timetable.

A tutor's classes are the unit's classes of that tutor and those of every tutor of the unit
(``marker_id`` None), as one sorted union of disjoint intervals. A stretch of marking
[start, end] worth ``minutes`` whole minutes (R4) is split in proportion to the time of it
that lies inside those intervals, rounded half up to a whole minute::

    during  = ⌊(2 · minutes · inside + length) / (2 · length)⌋   (times in microseconds)
    outside = minutes − during

So a stretch wholly inside a class is all during, one wholly outside is all outside, and
the two always add up to the minutes. A stretch of no length (a single activity) is all
during when that instant lies in a class ([start, end) of the class), else all outside.

The same arithmetic runs in SQL on PostgreSQL (:meth:`Timetable.split_blocks`: a binary search
of the intervals with ``width_bucket`` and a prefix sum, so a block costs O(log n)) and in
Python elsewhere (:meth:`Timetable.during`); both count integer microseconds and agree. On
psycopg 3 the SQL compares timestamps and sends its arrays in PostgreSQL's binary form
(:meth:`Timetable.split_by_time`), so a block that meets no class costs no arithmetic and
a term's timetable costs no parsing.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import accumulate, repeat
from operator import floordiv, sub
from typing import Any, Literal, TypeVar

import sqlalchemy as sa

from ..core.accounting import EPOCH, to_micros
from ..core.errors import ConfigurationError
from .bulk import binary_arrays
from .class_sql import (
    BIG_ARRAY,
    PACKED,
    SPLIT_BY_TIME_SQL,
    SPLIT_SQL,
    TEXT,
    TIME,
    PackedArray,
    PackedInts,
    PackedTimes,
    split_statement,
)

T = TypeVar("T")
MICROSECOND = timedelta(microseconds=1)
#: one key's room on the line of keys: times are microseconds within WINDOW of ``base``
WINDOW = 2**52
#: how many keys the line holds (slot × WINDOW stays within a signed 64-bit integer)
MAX_SLOTS = 2**63 // WINDOW - 1
#: how many ranges' arrays a timetable keeps
WINDOWS_KEPT = 8
#: how many things derived from its classes a timetable keeps (:meth:`Timetable.kept`)
DERIVED_KEPT = 16
MISSING = object()
#: before every key: the first interval of the arrays, so a binary search always lands
BEFORE = -(2**62)
#: the arrays sent for a range are kept by its first instant rounded down to this: a report
#: of the last 7 days starts a little later on every request, yet the same day's arrays
#: still hold every class that can overlap it
WINDOW_STEP = 24 * 3600 * 10**6
#: PostgreSQL's binary timestamps count microseconds from 2000-01-01 UTC
PG_EPOCH_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
PG_EPOCH = to_micros(PG_EPOCH_TIME)
#: the earliest instant PostgreSQL holds (4714-11-24 BC), after PG_EPOCH: every line's sentinel
PG_MIN = -211813488000000000


def union(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint intervals covering the same time; touching ones become one."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def split_minutes(minutes: int, length: int, inside: int, at_start_inside: bool) -> int:
    """R12: the during-class part of ``minutes`` for a stretch of ``length`` microseconds,
    ``inside`` of which lie in classes."""
    if length <= 0:
        return minutes if at_start_inside else 0
    return (2 * minutes * inside + length) // (2 * length)


#: a class as the host gives it: (marker_id or None, start, end)
Row = tuple[Any, Any, Any]


def spans_of(rows: Sequence[Row], unit_id: int) -> list[tuple[int | None, int, int]]:
    """The host's classes as (marker_id, start, end) in microseconds, checked and converted
    in bulk (C-level maps: a term's timetable is thousands of classes, read on every
    report); a malformed answer is the host's mistake, named."""
    where = f"class_times_loader for unit {unit_id}"
    if not rows:
        return []
    try:
        shapes = set(map(len, rows))
    except TypeError:
        shapes = set()
    if shapes != {3}:
        raise ConfigurationError(f"{where}: each class must be (marker_id or None, start, end)")
    markers, starts, ends = zip(*rows, strict=True)
    if not set(map(type, markers)) <= {int, type(None)}:
        raise ConfigurationError(f"{where}: a class's marker_id must be an int or None")
    try:
        a = list(map(floordiv, map(sub, starts, repeat(EPOCH)), repeat(MICROSECOND)))
        b = list(map(floordiv, map(sub, ends, repeat(EPOCH)), repeat(MICROSECOND)))
    except TypeError:
        raise ConfigurationError(
            f"{where}: start and end must be aware datetimes (with a time zone)"
        ) from None
    return list(zip(markers, a, b, strict=True))


@dataclass
class Timetable:
    """The classes of the stretches a report splits, by key: a marker in one unit's
    report (``by="marker"``), or a unit in one tutor's report across units (``by="unit"``).

    Each key's intervals lie on one line of integers, key slot × WINDOW + microseconds
    since ``base`` (a quarter window before the first class); a key without classes of its
    own takes ``default`` (slot 0).
    """

    by: Literal["marker", "unit"]
    base: int
    own: dict[int, list[tuple[int, int]]]
    default: list[tuple[int, int]]
    #: the classes as the host gave them (marker_id or None, start, end in microseconds),
    #: for the dashboard's calendar to shade: unmerged, each named by its tutor
    spans: Sequence[tuple[int | None, int, int]] = ()
    starts: list[int] = field(init=False)
    ends: list[int] = field(init=False)
    before: list[int] = field(init=False)
    slots: dict[int, int] = field(init=False)
    #: where each key's line lies in the arrays: slot -> [first, last) indices
    lines: list[tuple[int, int]] = field(init=False)
    #: the arrays as PostgreSQL reads them, by the first instant a report asks about
    windows: OrderedDict[tuple[int, str], dict[str, Any]] = field(init=False)
    #: :meth:`fingerprint` by window, made once per timetable
    prints: dict[tuple[int, int], str] = field(init=False, default_factory=dict)
    #: what readers work out from the classes alone, by their own key (:meth:`kept`)
    derived: dict[Hashable, Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.own) >= MAX_SLOTS:
            raise ConfigurationError(
                f"classes of at most {MAX_SLOTS - 1} tutors (or units) at once"
            )
        self.slots = {key: i + 1 for i, key in enumerate(sorted(self.own))}
        self.starts, self.ends, self.before = [BEFORE], [BEFORE], [0]
        self.lines, self.windows = [], OrderedDict()
        lines = [(0, self.default)] + [(self.slots[k], self.own[k]) for k in sorted(self.own)]
        for slot, intervals in lines:
            first = len(self.starts)
            for start, end in intervals:
                a, b = self._key(slot, start), self._key(slot, end)
                if b > a:
                    self.before.append(self.before[-1] + self.ends[-1] - self.starts[-1])
                    self.starts.append(a)
                    self.ends.append(b)
            self.lines.append((first, len(self.starts)))

    def sql_arrays(self, since: datetime) -> dict[str, str]:
        """The arrays as PostgreSQL reads them, for stretches that start at ``since`` or
        later: a key's classes that ended before then cannot overlap one, so they are left
        out (a week's report of a term's timetable sends a week of it), and the running
        sums are taken afresh over what is sent. Kept for the next report of that range (by
        its day: see WINDOW_STEP)."""
        lo = to_micros(since) // WINDOW_STEP * WINDOW_STEP
        found = self.windows.get((lo, "text"))
        if found is not None:
            return found
        kept: list[int] = []
        for slot, (first, last) in enumerate(self.lines):
            kept.extend(range(bisect_right(self.ends, self._key(slot, lo), first, last), last))
        starts = [BEFORE, *map(self.starts.__getitem__, kept)]
        ends = [BEFORE, *map(self.ends.__getitem__, kept)]
        before = [0, 0, *accumulate(map(sub, ends[1:-1], starts[1:-1]))][: len(starts)]
        arrays = (
            ("class_starts", starts),
            ("class_ends", ends),
            ("class_before", before),
            ("class_owners", [BEFORE, *sorted(self.own)]),
        )
        found = {name: "{" + ",".join(map(str, values)) + "}" for name, values in arrays}
        return self._keep(lo, "text", found)

    def _keep(self, lo: int, form: str, arrays: dict[str, Any]) -> dict[str, Any]:
        self.windows[lo, form] = arrays
        while len(self.windows) > WINDOWS_KEPT:
            self.windows.popitem(last=False)
        return arrays

    def time_arrays(self, since: datetime) -> dict[str, Any]:
        """The classes as :meth:`split_by_time` reads them, in PostgreSQL's binary form (it
        reads them without parsing a number): each key's line of real instants (its own
        classes, or the default ones, after a sentinel before every instant), where each
        line lies, the class time of its line before each class, the keys, and the span
        of every class sent. As :meth:`sql_arrays`, only classes that end after ``since``
        (rounded down to its day), kept for the next report of that range."""
        lo = to_micros(since) // WINDOW_STEP * WINDOW_STEP
        found = self.windows.get((lo, "time"))
        if found is not None:
            return found
        starts: list[int] = []
        ends: list[int] = []
        before: list[int] = []
        line_lo: list[int] = []
        line_hi: list[int] = []
        for intervals in [self.default] + [self.own[k] for k in sorted(self.own)]:
            line_lo.append(len(starts) + 1)
            starts.append(PG_MIN)
            ends.append(PG_MIN)
            before.append(0)
            kept = intervals[bisect_right([b for _, b in intervals], lo) :]
            if kept:
                before.extend(accumulate((b - a for a, b in kept[:-1]), initial=0))
            starts.extend(a - PG_EPOCH for a, _ in kept)
            ends.extend(b - PG_EPOCH for _, b in kept)
            line_hi.append(len(starts))
        # outside this span no block meets a class (with none, no block is inside it)
        real = [(a, b) for a, b in zip(starts, ends, strict=True) if a != PG_MIN]
        span_lo, span_hi = (
            (
                PG_EPOCH_TIME + min(a for a, _ in real) * MICROSECOND,
                PG_EPOCH_TIME + max(b for _, b in real) * MICROSECOND,
            )
            if real
            else (
                datetime.max.replace(tzinfo=timezone.utc),
                datetime.min.replace(tzinfo=timezone.utc),
            )
        )
        found = {
            "class_starts": PackedTimes.of(starts),
            "class_ends": PackedTimes.of(ends),
            "class_before": PackedInts.of(before),
            "line_lo": PackedInts.of(line_lo),
            "line_hi": PackedInts.of(line_hi),
            "class_owners": PackedInts.of([BEFORE, *sorted(self.own)]),
            "default_line": PackedTimes.of(starts[: line_hi[0]]),
            "span_lo": span_lo,
            "span_hi": span_hi,
        }
        return self._keep(lo, "time", found)

    @staticmethod
    def _base(spans: Iterable[tuple[Any, int, int]]) -> int:
        return min((a for _, a, _ in spans), default=0) - WINDOW // 4

    @classmethod
    def of_unit(cls, spans: Sequence[tuple[int | None, int, int]]) -> Timetable:
        """One unit's classes, keyed by marker: each tutor's own plus the whole unit's."""
        shared: list[tuple[int, int]] = []
        mine: dict[int, list[tuple[int, int]]] = {}
        for marker, a, b in spans:
            (shared if marker is None else mine.setdefault(marker, [])).append((a, b))
        own = {marker: union(theirs + shared) for marker, theirs in mine.items()}
        return cls("marker", cls._base(spans), own, union(shared), tuple(spans))

    @classmethod
    def of_marker(
        cls, marker_id: int, spans: Mapping[int, Sequence[tuple[int | None, int, int]]]
    ) -> Timetable:
        """One tutor's classes in several units, keyed by unit."""
        own = {
            unit: union((a, b) for who, a, b in unit_spans if who in (None, marker_id))
            for unit, unit_spans in spans.items()
        }
        every = [span for unit_spans in spans.values() for span in unit_spans]
        theirs = tuple(span for span in every if span[0] in (None, marker_id))
        return cls("unit", cls._base(every), own, [], theirs)

    def classes(
        self, start: datetime, end: datetime
    ) -> list[tuple[int | None, datetime, datetime]]:
        """The classes that meet in [start, end), as (marker_id or None, start, end)."""
        lo, hi = to_micros(start), to_micros(end)
        return [
            (marker, EPOCH + a * MICROSECOND, EPOCH + b * MICROSECOND)
            for marker, a, b in self.spans
            if a < hi and b > lo
        ]

    def kept(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()``, worked out once per ``key`` and kept with the timetable (up to
        :data:`DERIVED_KEPT` keys): a host's loader answers the same timetable on every
        report, so what is derived from its classes alone serves them all."""
        found = self.derived.get(key, MISSING)
        if found is MISSING:
            if len(self.derived) >= DERIVED_KEPT:
                self.derived.clear()  # one step (requests of other threads read it too)
            found = self.derived[key] = make()
        return found  # type: ignore[no-any-return]

    def _key(self, slot: int, micros: int) -> int:
        return slot * WINDOW + min(max(micros - self.base, 0), WINDOW - 1)

    def key_of(self, unit_id: int, marker_id: int) -> int:
        return unit_id if self.by == "unit" else marker_id

    def _covered(self, key: int) -> tuple[int, bool]:
        """Class time on the line before ``key``, and whether ``key`` lies in a class."""
        i = bisect_right(self.starts, key) - 1
        start, end = self.starts[i], self.ends[i]
        return self.before[i] + max(0, min(key, end) - start), key < end

    def inside(self, key: int, start: int, end: int) -> tuple[int, int, bool]:
        """R12's measures of a stretch of ``key``'s line from ``start`` to ``end``
        (microseconds): its length, the time of it inside classes, and whether its start
        lies in a class — what :meth:`during` splits its minutes by."""
        slot = self.slots.get(key, 0)
        a, b = self._key(slot, start), self._key(slot, end)
        (before_a, a_inside), (before_b, _) = self._covered(a), self._covered(b)
        return b - a, before_b - before_a, a_inside

    def fingerprint(self, low: int, high: int) -> str:
        """What the classes are within [low, high) (microseconds), as a hash: each key's
        line clipped to the window (a tutor's own only where it differs from the unit's
        shared classes there). Two timetables with the same fingerprint split every stretch
        within the window alike, whatever else they hold (R12 reads the classes a stretch
        overlaps, and nothing more). A window without a class is ""."""
        found = self.prints.get((low, high))
        if found is not None:
            return found
        digest = hashlib.blake2b(digest_size=16)
        shared = _clipped(self.default, low, high)
        digest.update(_packed(BEFORE, shared))
        empty = not shared
        for key in sorted(self.own):
            line = _clipped(self.own[key], low, high)
            if line != shared:
                digest.update(_packed(key, line))
                empty = empty and not line
        # no class at all there: "" (every stretch within the window is outside class)
        found = self.prints[low, high] = "" if empty else digest.hexdigest()
        return found

    def during(
        self, unit_id: int, marker_id: int, start: datetime, end: datetime, minutes: int
    ) -> int:
        """R12 in Python: the during-class minutes of a stretch of ``minutes``."""
        slot = self.slots.get(self.key_of(unit_id, marker_id), 0)
        a, b = self._key(slot, to_micros(start)), self._key(slot, to_micros(end))
        (before_a, a_inside), (before_b, _) = self._covered(a), self._covered(b)
        return split_minutes(minutes, b - a, before_b - before_a, a_inside)

    def split_blocks(
        self, conn: sa.Connection, blocks: sa.Select[Any], since: datetime
    ) -> sa.Subquery:
        """R12 in PostgreSQL: ``blocks`` (bucket, unit, marker, first, last, minutes) with
        each block's ``during`` minutes beside its bucket, marker and minutes — the same
        integers as :meth:`during` — for blocks that start at ``since`` or later.

        The arrays are sent once, as text, and parsed once, in a materialized CTE; each use
        reads them through an uncorrelated scalar subquery (an InitPlan: a parameter from
        then on, never carried along with each block). Each block finds its key's slot and
        its intervals by ``width_bucket``, a binary search; each layer is fenced (OFFSET 0)
        so its expressions run once a block. The layers are SQL text: built as expression
        trees, they cost SQLAlchemy more per report than PostgreSQL spends on them.

        On psycopg 3 the split runs over real instants instead (:meth:`split_by_time`)."""
        if binary_arrays(conn):
            return self.split_by_time(blocks, since)
        arrays = (
            sa.select(
                *(
                    sa.cast(sa.bindparam(name, text, type_=TEXT), BIG_ARRAY).label(name)
                    for name, text in self.sql_arrays(since).items()
                )
            )
            .cte("tt_timetable")
            .prefix_with("MATERIALIZED")
        )
        source = blocks.cte("tt_blocks")
        sql = SPLIT_SQL.format(
            key="unit" if self.by == "unit" else "marker",
            base=int(self.base),
            window=WINDOW,
            last=WINDOW - 1,
        )
        return split_statement(sql, source, arrays)

    def split_by_time(self, blocks: sa.Select[Any], since: datetime) -> sa.Subquery:
        """:meth:`split_blocks` over real instants, with the arrays of :meth:`time_arrays`
        in binary form (psycopg 3): each block is compared with its line's classes as
        timestamps, so only a block that overlaps a class (or lies in one) is turned into
        microseconds; a block in a gap between classes, or outside every class sent, costs
        a binary search or nothing. The same integers as :meth:`during` (which counts a
        block's time from at most ~35 years before the first class: no longer block is
        real)."""
        arrays = (
            sa.select(
                *(
                    sa.bindparam(
                        name, value, type_=PACKED if isinstance(value, PackedArray) else TIME
                    ).label(name)
                    for name, value in self.time_arrays(since).items()
                )
            )
            .cte("tt_timetable")
            .prefix_with("NOT MATERIALIZED")
        )
        sql = SPLIT_BY_TIME_SQL.format(key="unit" if self.by == "unit" else "marker")
        return split_statement(sql, blocks.cte("tt_blocks"), arrays)


def _clipped(intervals: list[tuple[int, int]], low: int, high: int) -> list[int]:
    """Sorted disjoint ``intervals`` cut to [low, high), flattened."""
    first = bisect_right(intervals, (low, low))
    if first and intervals[first - 1][1] > low:
        first -= 1
    out: list[int] = []
    for a, b in intervals[first:]:
        if a >= high:
            break
        a, b = max(a, low), min(b, high)
        if b > a:
            out += (a, b)
    return out


def _packed(key: int, flat: list[int]) -> bytes:
    """A line for a fingerprint: its key, its length, its instants."""
    return struct.pack(f"!qq{len(flat)}q", key, len(flat), *flat)


class Memo:
    """The last timetables built, by what they were built from: a host's loader answers the
    same term on every report, and building its lines is the costly part, so an answer
    equal to the last one (compared in C, element by element) reuses what was built."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._built: OrderedDict[Hashable, tuple[tuple[Any, ...], Timetable]] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, key: Hashable, answer: tuple[Any, ...], build: Callable[[], Timetable]
    ) -> Timetable:
        with self._lock:
            hit = self._built.get(key)
        if hit is not None and hit[0] == answer:
            return hit[1]
        timetable = build()
        with self._lock:
            self._built[key] = (answer, timetable)
            self._built.move_to_end(key)
            while len(self._built) > self.size:
                self._built.popitem(last=False)
        return timetable


def split_rows(rows: Sequence[dict[str, Any]], timetable: Timetable) -> None:
    """R12 per session: each row (unit_id, marker_id, start_time, last_activity,
    duration_minutes) gets its ``during_class_minutes`` and ``outside_class_minutes`` —
    :meth:`Timetable.during` of each, worked out in one loop (a calendar's week is hundreds
    of sessions, and a call per step cost more than the arithmetic)."""
    t = timetable
    key = "unit_id" if t.by == "unit" else "marker_id"
    slots, starts, ends, before, base = t.slots, t.starts, t.ends, t.before, t.base
    last = WINDOW - 1
    for r in rows:
        line = slots.get(r[key], 0) * WINDOW
        a = line + min(max((r["start_time"] - EPOCH) // MICROSECOND - base, 0), last)
        b = line + min(max((r["last_activity"] - EPOCH) // MICROSECOND - base, 0), last)
        minutes = r["duration_minutes"]
        i, j = bisect_right(starts, a) - 1, bisect_right(starts, b) - 1
        if i == j and a >= ends[i]:
            during = 0  # in a gap between classes: all outside (most sessions)
        else:
            inside = before[j] + max(0, min(b, ends[j]) - starts[j])
            inside -= before[i] + max(0, min(a, ends[i]) - starts[i])
            during = split_minutes(minutes, b - a, inside, a < ends[i])
        r["during_class_minutes"] = during
        r["outside_class_minutes"] = minutes - during


def with_split(row: dict[str, Any], during: int) -> dict[str, Any]:
    """A report row (with its ``minutes``) with the split beside them."""
    row["during_class_minutes"] = during
    row["outside_class_minutes"] = row["minutes"] - during
    return row
