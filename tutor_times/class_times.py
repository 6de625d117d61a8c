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
Python elsewhere (:meth:`Timetable.during`); both work in integer microseconds and agree.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate, repeat
from operator import floordiv, sub
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from .accounting import EPOCH, to_micros
from .errors import ConfigurationError


class ClassTime(NamedTuple):
    """A scheduled class: its tutor (None: every tutor of the unit), start and end."""

    marker_id: int | None
    start: datetime
    end: datetime


MICROSECOND = timedelta(microseconds=1)
#: one key's room on the line of keys: times are microseconds within WINDOW of ``base``
WINDOW = 2**52
#: how many keys the line holds (slot × WINDOW stays within a signed 64-bit integer)
MAX_SLOTS = 2**63 // WINDOW - 1
#: SQL types made once: a type object made afresh would be inspected again for SQLAlchemy's
#: statement cache key on every report
BIGINT = sa.BigInteger()
TEXT = sa.Text()
BIG_ARRAY = postgresql.ARRAY(BIGINT)
#: how many ranges' arrays a timetable keeps
WINDOWS_KEPT = 8
#: before every key: the first interval of the arrays, so a binary search always lands
BEFORE = -(2**62)


#: R12 per block in PostgreSQL, layer by layer over the CTEs tt_blocks and tt_timetable:
#: the key's slot, the block's ends on its line, the intervals they fall in, the split
SPLIT_SQL = """
SELECT x.bucket, x.marker, x.m AS minutes,
  CASE WHEN x.b <= x.a THEN CASE WHEN x.a < x.ea THEN x.m ELSE 0 END
  ELSE CAST(div(2 * x.m * ((x.bb + greatest(0, least(x.b, x.eb) - x.sb))
                 - (x.ba + greatest(0, least(x.a, x.ea) - x.sa))) + (x.b - x.a),
                2 * (x.b - x.a)) AS BIGINT) END AS during
FROM (
  SELECT k.bucket, k.marker, k.m, k.a, k.b,
    (SELECT class_starts FROM tt_timetable)[k.ia] AS sa,
    (SELECT class_ends FROM tt_timetable)[k.ia] AS ea,
    (SELECT class_before FROM tt_timetable)[k.ia] AS ba,
    (SELECT class_starts FROM tt_timetable)[k.ib] AS sb,
    (SELECT class_ends FROM tt_timetable)[k.ib] AS eb,
    (SELECT class_before FROM tt_timetable)[k.ib] AS bb
  FROM (
    SELECT j.bucket, j.marker, j.m, j.a, j.b,
      width_bucket(j.a, (SELECT class_starts FROM tt_timetable)) AS ia,
      width_bucket(j.b, (SELECT class_starts FROM tt_timetable)) AS ib
    FROM (
      SELECT o.bucket, o.marker, o.m,
        o.slot * {window} + least(greatest(
          CAST(extract(epoch FROM o.first) * 1000000 AS BIGINT) - ({base}), 0), {last}) AS a,
        o.slot * {window} + least(greatest(
          CAST(extract(epoch FROM o.last) * 1000000 AS BIGINT) - ({base}), 0), {last}) AS b
      FROM (
        SELECT g.bucket, g.marker, g.first, g.last, g.m,
          CAST(CASE WHEN (SELECT class_owners FROM tt_timetable)[g.at] = g.key
               THEN g.at - 1 ELSE 0 END AS BIGINT) AS slot
        FROM (
          SELECT tt_blocks.bucket, tt_blocks.marker, tt_blocks.first, tt_blocks.last,
            CAST(tt_blocks.minutes AS BIGINT) AS m,
            CAST(tt_blocks.{key} AS BIGINT) AS key,
            width_bucket(CAST(tt_blocks.{key} AS BIGINT),
                         (SELECT class_owners FROM tt_timetable)) AS at
          FROM tt_blocks OFFSET 0) AS g OFFSET 0) AS o OFFSET 0) AS j OFFSET 0) AS k OFFSET 0
) AS x
"""


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
    starts: list[int] = field(init=False)
    ends: list[int] = field(init=False)
    before: list[int] = field(init=False)
    slots: dict[int, int] = field(init=False)
    #: where each key's line lies in the arrays: slot -> [first, last) indices
    lines: list[tuple[int, int]] = field(init=False)
    #: the arrays as PostgreSQL reads them, by the first instant a report asks about
    windows: OrderedDict[int, dict[str, str]] = field(init=False)

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
        sums are taken afresh over what is sent. Kept for the next report of that range."""
        lo = to_micros(since)
        found = self.windows.get(lo)
        if found is not None:
            return found
        kept: list[int] = []
        for slot, (first, last) in enumerate(self.lines):
            kept.extend(range(bisect_right(self.ends, self._key(slot, lo), first, last), last))
        starts = [BEFORE, *map(self.starts.__getitem__, kept)]
        ends = [BEFORE, *map(self.ends.__getitem__, kept)]
        before = [0, 0, *accumulate(map(sub, ends[1:-1], starts[1:-1]))][: len(starts)]
        found = {
            name: "{" + ",".join(map(str, values)) + "}"
            for name, values in (
                ("class_starts", starts),
                ("class_ends", ends),
                ("class_before", before),
                ("class_owners", [BEFORE, *sorted(self.own)]),
            )
        }
        self.windows[lo] = found
        while len(self.windows) > WINDOWS_KEPT:
            self.windows.popitem(last=False)
        return found

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
        return cls("marker", cls._base(spans), own, union(shared))

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
        return cls("unit", cls._base(every), own, [])

    def _key(self, slot: int, micros: int) -> int:
        return slot * WINDOW + min(max(micros - self.base, 0), WINDOW - 1)

    def key_of(self, unit_id: int, marker_id: int) -> int:
        return unit_id if self.by == "unit" else marker_id

    def _covered(self, key: int) -> tuple[int, bool]:
        """Class time on the line before ``key``, and whether ``key`` lies in a class."""
        i = bisect_right(self.starts, key) - 1
        start, end = self.starts[i], self.ends[i]
        return self.before[i] + max(0, min(key, end) - start), key < end

    def during(
        self, unit_id: int, marker_id: int, start: datetime, end: datetime, minutes: int
    ) -> int:
        """R12 in Python: the during-class minutes of a stretch of ``minutes``."""
        slot = self.slots.get(self.key_of(unit_id, marker_id), 0)
        a, b = self._key(slot, to_micros(start)), self._key(slot, to_micros(end))
        (before_a, a_inside), (before_b, _) = self._covered(a), self._covered(b)
        return split_minutes(minutes, b - a, before_b - before_a, a_inside)

    def split_blocks(self, blocks: sa.Subquery, since: datetime) -> sa.Subquery:
        """R12 in PostgreSQL: ``blocks`` (bucket, unit, marker, first, last, minutes) with
        each block's ``during`` minutes beside its bucket, marker and minutes — the same
        integers as :meth:`during` — for blocks that start at ``since`` or later.

        The arrays are sent once, as text, and parsed once, in a materialized CTE; each use
        reads them through an uncorrelated scalar subquery (an InitPlan: a parameter from
        then on, never carried along with each block). Each block finds its key's slot and
        its intervals by ``width_bucket``, a binary search; each layer is fenced (OFFSET 0)
        so its expressions run once a block. The layers are SQL text: built as expression
        trees, they cost SQLAlchemy more per report than PostgreSQL spends on them."""
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
        source = sa.select(blocks).cte("tt_blocks")
        sql = SPLIT_SQL.format(
            key="unit" if self.by == "unit" else "marker",
            base=int(self.base),
            window=WINDOW,
            last=WINDOW - 1,
        )
        split = (
            sa.text(sql)
            .columns(
                sa.column("bucket", sa.Integer()),
                sa.column("marker", BIGINT),
                sa.column("minutes", BIGINT),
                sa.column("during", BIGINT),
            )
            .add_cte(source, arrays)
        )
        return split.subquery("split")


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
    duration_minutes) gets its ``during_class_minutes`` and ``outside_class_minutes``."""
    for r in rows:
        during = timetable.during(
            r["unit_id"], r["marker_id"], r["start_time"], r["last_activity"], r["duration_minutes"]
        )
        r["during_class_minutes"] = during
        r["outside_class_minutes"] = r["duration_minutes"] - during


def with_split(row: dict[str, Any], during: int) -> dict[str, Any]:
    """A report row (with its ``minutes``) with the split beside them."""
    row["during_class_minutes"] = during
    row["outside_class_minutes"] = row["minutes"] - during
    return row
