"""R12's split of a unit's R10 blocks, kept on PostgreSQL and tied to the timetable it was
computed from, so that a report with class times adds up stored figures as one without does.

A block's split depends on its tutor's classes over its own time and on nothing else. So, per
(unit, UTC month of a block's start, tutor) — the rows of the summary's roll-up
(:mod:`.rollups`) — two tables keep:

- ``tutor_times_class_months``: what the month's blocks were split against. ``seen``: the
  version of the roll-up's row they were read with (its ``xmin``: every statement that
  changes a block of the month rewrites that row, so a row rewritten since has another);
  ``fingerprint``: the unit's classes over the month and :data:`REACH` past it
  (:meth:`.Timetable.fingerprint`); ``long_blocks``: the month's blocks that reach further
  than that (their split may depend on classes the fingerprint does not see: counted live).
- ``tutor_times_class_blocks``: each of the month's blocks that meets a class: its start,
  its stored minutes, its length and the time of it inside classes, in microseconds. A
  block that meets none splits all its minutes outside class and is not kept.

A report of a unit with a timetable (:func:`whole_blocks`) compares, on its own snapshot, each
(month, tutor) of its range with the roll-up's row and the timetable's fingerprint of the
month. Those that agree give the split of their whole blocks from the stored measures — the
same integers as :meth:`.Timetable.during` — in one grouped read of the few blocks that meet
a class. Those that do not (a class added, moved or removed in the month; a session of the
tutor's month closed, moved or deleted since; a month never split) are split from their
blocks here, counted in the report, and stored for the next one, in a savepoint that gives
way to any concurrent writer of the same rows (or to a read-only replica): what is stored is
only ever used where it still agrees, so the report is R12 whatever is stored.

Nothing is written while tracking or closing: the roll-up's triggers already rewrite the
month's row, and that is the only signal used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..core.accounting import UTC, lock_hash, to_micros
from .class_sql import PACKED, PackedTimes
from .class_times import PG_EPOCH, Timetable, split_minutes
from .drivers import binary_arrays

if TYPE_CHECKING:
    from .models import Models

MONTHS = "tutor_times_class_months"
BLOCKS = "tutor_times_class_blocks"
#: how far past its month a month's classes are fingerprinted: a block that starts in the
#: month and ends within this is split by classes the fingerprint sees
REACH = timedelta(days=1)
MICROSECOND = timedelta(microseconds=1)


def tables(metadata: sa.MetaData, time_type: Any) -> tuple[sa.Table, sa.Table]:
    """The two tables, declared on ``metadata`` (on every backend, so that one schema is
    migrated; only PostgreSQL fills them)."""
    months = sa.Table(
        MONTHS,
        metadata,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("marker_id", sa.BigInteger, nullable=False),
        sa.Column("seen", sa.BigInteger, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("long_blocks", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint(
            "unit_id",
            "month",
            "marker_id",
            postgresql_include=["seen", "fingerprint", "long_blocks"],
        ),
    )
    blocks = sa.Table(
        BLOCKS,
        metadata,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("block_start", time_type, nullable=False),
        sa.Column("marker_id", sa.BigInteger, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("block_minutes", sa.BigInteger, nullable=False),
        sa.Column("length", sa.BigInteger, nullable=False),
        sa.Column("inside", sa.BigInteger, nullable=False),
        # a range's blocks read from the index alone
        sa.PrimaryKeyConstraint(
            "unit_id",
            "block_start",
            "marker_id",
            postgresql_include=["month", "block_minutes", "length", "inside"],
        ),
    )
    return months, blocks


def months_of(start: datetime, end: datetime) -> list[date]:
    """The UTC months of the instants in [start, end), as their first days."""
    first = start.astimezone(UTC).date().replace(day=1)
    last = (end - MICROSECOND).astimezone(UTC).date().replace(day=1)
    out = []
    while first <= last:
        out.append(first)
        first = _next(first)
    return out


def _next(month: date) -> date:
    return (month + timedelta(days=32)).replace(day=1)


def _at(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def asked(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The classes a unit's report over [start, end) asks its loader for: the whole UTC
    months of the range, and :data:`REACH` past them, so that every month it reads has a
    fingerprint."""
    months = months_of(start, end)
    return _at(months[0]), _at(_next(months[-1])) + REACH


def window(month: date) -> tuple[int, int]:
    """The microseconds whose classes split the blocks of ``month`` (those that end within
    :data:`REACH` of the month's end)."""
    return to_micros(_at(month)), to_micros(_at(_next(month)) + REACH)


def usable(conn: sa.Connection, models: Models, scope: Any, timetable: Any) -> bool:
    """Whether a report over ``scope`` splits by the stored measures: on PostgreSQL, for
    one unit's timetable by tutor, away from the calendar's ends."""
    return (
        scope.unit_id is not None
        and conn.dialect.name == "postgresql"
        and models.ClassMonths is not None
        and isinstance(timetable, Timetable)
        and timetable.by == "marker"
        and scope.start.year > 1
        and scope.end.year < 9999
    )


#: the (month, tutor) of a range that do not agree with what is stored: ``rolled`` when the
#: roll-up has the row (its blocks are to be split), not when only the store has it
DISAGREEING = f"""
SELECT coalesce(t.month, c.month) AS month, coalesce(t.marker_id, c.marker_id) AS marker,
       t.marker_id IS NOT NULL AS rolled
FROM (SELECT r.month, r.marker_id, CAST(CAST(r.xmin AS text) AS bigint) AS seen
      FROM tutor_times_tutor_months AS r
      WHERE r.unit_id = :unit AND r.month = ANY(CAST(:months AS date[])) {{marker_t}}) AS t
FULL JOIN (SELECT k.month, k.marker_id, k.seen, k.fingerprint, k.long_blocks
           FROM {MONTHS} AS k
           WHERE k.unit_id = :unit AND k.month = ANY(CAST(:months AS date[])) {{marker_c}}) AS c
  ON c.month = t.month AND c.marker_id = t.marker_id
LEFT JOIN unnest(CAST(:months AS date[]), CAST(:prints AS text[])) AS f(month, print)
  ON f.month = coalesce(t.month, c.month)
WHERE t.marker_id IS NULL OR c.marker_id IS NULL OR c.seen <> t.seen
   OR c.fingerprint IS DISTINCT FROM f.print OR c.long_blocks > 0
"""

#: the blocks of some (month, tutor) of a unit, with the version of each one's roll-up row,
#: read in one statement (one snapshot whatever the isolation)
BLOCKS_OF = """
WITH p AS (
  SELECT r.month, r.marker_id, CAST(CAST(r.xmin AS text) AS bigint) AS seen
  FROM tutor_times_tutor_months AS r
  JOIN unnest(CAST(:months AS date[]), CAST(:markers AS bigint[])) AS q(month, marker)
    ON r.month = q.month AND r.marker_id = q.marker
  WHERE r.unit_id = :unit)
SELECT p.month, p.marker_id, p.seen, s.start_time, s.block_end, s.block_minutes
FROM p LEFT JOIN (
  SELECT ms.marker_id, ms.start_time, ms.block_end, ms.block_minutes,
         CAST(date_trunc('month', ms.start_time AT TIME ZONE 'UTC') AS date) AS month
  FROM marking_sessions AS ms
  WHERE ms.unit_id = :unit AND ms.start_time >= :since AND ms.start_time < :until
    AND ms.block_minutes IS NOT NULL) AS s
  ON s.month = p.month AND s.marker_id = p.marker_id
"""


def whole_blocks(
    conn: sa.Connection,
    models: Models,
    unit_id: int,
    marker_id: int | None,
    start: datetime,
    end: datetime,
    timetable: Timetable,
    *,
    min_minutes: int,
    starts: list[datetime] | None,
    bucket_of: Callable[[datetime], Any],
    cut: Mapping[tuple[int, datetime], tuple[datetime, int] | None],
) -> list[tuple[Any, int, int]]:
    """(bucket, marker, during-class minutes) of the stored R10 blocks of ``unit_id`` (and
    ``marker_id``) that start in [start, end), but those ``cut`` (marker, block start) —
    the split of :func:`.reports.figured_by`'s whole blocks, in the buckets that begin at
    ``starts`` (one without), as :func:`.reports.bucket_index` and ``bucket_of`` give
    them."""
    # the months with classes: in the others every block is outside class
    printed = {m: timetable.fingerprint(*window(m)) for m in months_of(start, end)}
    printed = {m: p for m, p in printed.items() if p}
    if not printed:
        return []
    months, prints = list(printed), list(printed.values())
    marker_t = "" if marker_id is None else "AND r.marker_id = :marker"
    marker_c = "" if marker_id is None else "AND k.marker_id = :marker"
    disagreeing = (
        sa.text(DISAGREEING.format(marker_t=marker_t, marker_c=marker_c))
        .bindparams(
            sa.bindparam("unit", unit_id, type_=sa.BigInteger),
            sa.bindparam("months", months, type_=postgresql.ARRAY(sa.Date)),
            sa.bindparam("prints", prints, type_=postgresql.ARRAY(sa.Text)),
            *([] if marker_id is None else [sa.bindparam("marker", marker_id)]),
        )
        .columns(
            sa.column("month", sa.Date),
            sa.column("marker", sa.BigInteger),
            sa.column("rolled", sa.Boolean),
        )
        .cte("disagreeing")
    )
    bad = disagreeing.c
    # the agreeing months' stored measures, grouped in PostgreSQL, and in the same statement
    # the (month, tutor) that do not agree
    b = models.ClassBlocks.c
    m = sa.func.greatest(b.block_minutes, min_minutes)
    during = sa.case(
        (b.length == 0, m * b.inside),
        else_=sa.func.div(2 * m * b.inside + b.length, 2 * b.length),
    )
    value = _bucket(conn, starts, b.block_start)
    where = [
        b.unit_id == unit_id,
        b.block_start >= start,
        b.block_start < end,
        b.month == sa.any_(sa.bindparam("class_months", months, type_=postgresql.ARRAY(sa.Date))),
        ~sa.exists().where(bad.month == b.month, bad.marker == b.marker_id),
    ]
    if marker_id is not None:
        where.append(b.marker_id == marker_id)
    summed = (
        sa.select(
            sa.literal(1).label("kind"),
            value.label("bucket"),
            b.marker_id.label("marker"),
            sa.cast(sa.func.sum(during), sa.BigInteger).label("during"),
            sa.null().label("month"),
            sa.null().label("rolled"),
        )
        .where(*where)
        .group_by(value, b.marker_id)
    )
    listed = sa.select(sa.literal(0), sa.null(), bad.marker, sa.null(), bad.month, bad.rolled)
    out: list[tuple[Any, int, int]] = []
    gone: list[tuple[date, int]] = []
    rolled: list[tuple[date, int]] = []
    for kind, value_, marker, summed_during, month, was_rolled in conn.execute(
        sa.union_all(summed, listed)
    ):
        if kind:
            out.append((value_, marker, int(summed_during)))
        else:
            gone.append((month, marker))
            if was_rolled:
                rolled.append((month, marker))
    # the cut blocks counted above are merged again by the report: their stored split out
    failing = set(gone)
    for (marker, first), stored in cut.items():
        if stored is None or not start <= first < end:
            continue
        month = first.astimezone(UTC).date().replace(day=1)
        if month not in printed or (month, marker) in failing:
            continue
        last, minutes = stored
        length, inside, at_start = timetable.inside(marker, to_micros(first), to_micros(last))
        split_ = split_minutes(max(minutes, min_minutes), length, inside, at_start)
        out.append((bucket_of(first), marker, -split_))
    if gone:
        split = _split_months(conn, unit_id, timetable, rolled)
        for (_, marker), (_, _, measured) in split.items():
            for first, minutes, length, inside, at_start, _ in measured:
                if start <= first < end and (marker, first) not in cut:
                    credited = max(minutes, min_minutes)
                    split_ = split_minutes(credited, length, inside, at_start)
                    out.append((bucket_of(first), marker, split_))
        _store(conn, models, unit_id, gone, split, printed)
    return out


def _bucket(conn: sa.Connection, starts: list[datetime] | None, at: Any) -> Any:
    """SQL: the bucket of ``at`` among ``starts``, as :func:`.reports.bucket_index` gives
    it; the starts sent in PostgreSQL's binary form where the driver takes it (a timeline
    of two years by day has 730, and dumping each took longer than the statement)."""
    if not starts or len(starts) == 1:
        return sa.literal(0)
    if binary_arrays(conn):
        packed = PackedTimes.of([to_micros(s) - PG_EPOCH for s in starts])
        thresholds: Any = sa.bindparam(None, packed, type_=PACKED)
    else:
        thresholds = sa.bindparam(None, starts, type_=postgresql.ARRAY(sa.DateTime(timezone=True)))
    return sa.func.greatest(sa.func.width_bucket(at, thresholds), 1) - 1


#: one (month, tutor)'s split: the roll-up row's version, its long blocks, and each block's
#: (start, stored minutes, length, inside, start in a class, long)
Measured = tuple[int, int, list[tuple[datetime, int, int, int, bool, bool]]]


def _split_months(
    conn: sa.Connection, unit_id: int, timetable: Timetable, pairs: list[tuple[date, int]]
) -> dict[tuple[date, int], Measured]:
    """Each of ``pairs`` (month, marker) of the unit, its blocks measured against the
    timetable."""
    if not pairs:
        return {}
    since = min(month for month, _ in pairs)
    until = max(_next(month) for month, _ in pairs)
    rows = conn.execute(
        sa.text(BLOCKS_OF),
        {
            "unit": unit_id,
            "months": [month for month, _ in pairs],
            "markers": [marker for _, marker in pairs],
            "since": _at(since),
            "until": _at(until),
        },
    )
    found: dict[tuple[date, int], Measured] = {}
    for month, marker, seen, first, last, minutes in rows:
        key = (month, marker)
        entry = found.setdefault(key, (seen, 0, []))
        if first is None:
            continue
        a, b = to_micros(first), to_micros(last)
        length, inside, at_start = timetable.inside(marker, a, b)
        long = b > window(month)[1]
        if long:
            entry = found[key] = (entry[0], entry[1] + 1, entry[2])
        entry[2].append((first, int(minutes), length, inside, at_start, long))
    return found


def _store(
    conn: sa.Connection,
    models: Models,
    unit_id: int,
    gone: list[tuple[date, int]],
    split: dict[tuple[date, int], Measured],
    prints: dict[date, str],
) -> None:
    """Keep ``split`` in place of what ``gone`` (month, marker) had stored, in a savepoint:
    when a concurrent report of the unit is storing (it holds the unit's lock), when
    another stored a row after this report's snapshot, or on a read-only replica, nothing
    is stored."""
    month_rows = [
        {
            "unit_id": unit_id,
            "month": month,
            "marker_id": marker,
            "seen": seen,
            "fingerprint": prints[month],
            "long_blocks": long_blocks,
        }
        for (month, marker), (seen, long_blocks, _) in split.items()
    ]
    block_rows = [
        {
            "unit_id": unit_id,
            "block_start": first,
            "marker_id": marker,
            "month": month,
            "block_minutes": minutes,
            "length": length,
            "inside": inside if length else 1,
        }
        for (month, marker), (_, _, measured) in split.items()
        for first, minutes, length, inside, at_start, long in measured
        # a block that meets no class splits nothing into class; a long one is split live
        if not long and (inside > 0 if length else at_start)
    ]
    savepoint = conn.begin_nested()
    try:
        locked = conn.execute(
            sa.select(sa.func.pg_try_advisory_xact_lock(lock_hash(f"class_store:{unit_id}")))
        ).scalar()
        if not locked:
            savepoint.rollback()
            return
        for table in (models.ClassBlocks, models.ClassMonths):
            conn.execute(
                sa.delete(table).where(
                    table.c.unit_id == unit_id,
                    sa.tuple_(table.c.month, table.c.marker_id).in_(gone),
                )
            )
        if month_rows:
            conn.execute(sa.insert(models.ClassMonths), month_rows)
        if block_rows:
            conn.execute(sa.insert(models.ClassBlocks), block_rows)
        savepoint.commit()
    except sa.exc.DBAPIError:
        savepoint.rollback()
