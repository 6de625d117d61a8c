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

Per (unit, month), ``tutor_times_class_checked`` records that every tutor of the month
agreed: the roll-up's version of the month (:data:`.rollups.VERSIONS`, new whenever a
statement changes any of its rows) and the fingerprint they agreed with, as one statement
found them (:func:`_check`).

A report of a unit with a timetable (:func:`whole_blocks`) reads, on its own snapshot, each
month of its range that has a class: where the month's version and fingerprint are those
recorded, every tutor's stored split of it still agrees — two rows read by key, however many
tutors. Only in the other months is each (month, tutor) compared with the roll-up's row and
the fingerprint. What agrees gives the split of its whole blocks from the stored measures —
the same integers as :meth:`.Timetable.during` — in one grouped read of the few blocks that
meet a class, in the same statement. What does not (a class added, moved or removed in the
month; a session of the tutor's month closed, moved or deleted since; a month never split)
is split from its blocks here, counted in the report, and stored for the next one, with the
months it checked, in a savepoint that gives way to any concurrent writer of the same rows
(or to a read-only replica): what is stored is only ever used where it still agrees, so the
report is R12 whatever is stored.

Nothing is written while tracking or closing but what the roll-up's triggers write: its
month's row, and the month's version beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..core.accounting import UTC, lock_hash, to_micros
from .bulk import binary_arrays
from .class_sql import PackedTimes
from .class_statements import BLOCKS as BLOCKS
from .class_statements import BLOCKS_OF, VERIFIED, summed_compiled, summed_statement
from .class_statements import CHECKED as CHECKED
from .class_statements import MONTHS as MONTHS
from .class_times import PG_EPOCH, Timetable, split_minutes
from .drivers import rows_on_generic_plan

if TYPE_CHECKING:
    from .models import Models

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


def checked_table(metadata: sa.MetaData) -> sa.Table:
    """The months whose every tutor's stored split agreed, declared on ``metadata`` (on
    every backend; only PostgreSQL fills it): per (unit, month), the roll-up's ``version``
    of the month (:data:`.rollups.VERSIONS`) and the ``fingerprint`` they all agreed with,
    or a NULL version where that is not known."""
    return sa.Table(
        CHECKED,
        metadata,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("version", sa.BigInteger),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("unit_id", "month", postgresql_include=["version", "fingerprint"]),
    )


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
    the split of :func:`~tutor_times.reports.figured.figured_by`'s whole blocks, in the buckets that begin at
    ``starts`` (one without), as :func:`~tutor_times.reports.figured.bucket_index` and ``bucket_of`` give
    them."""
    # the months with classes: in the others every block is outside class
    printed = {m: timetable.fingerprint(*window(m)) for m in months_of(start, end)}
    printed = {m: p for m, p in printed.items() if p}
    if not printed:
        return []
    params, buckets = _params(conn, unit_id, marker_id, start, end, printed, min_minutes, starts)
    out, dirty, gone, rolled = _stored_split(conn, marker_id is not None, buckets, params)
    # the cut blocks counted above are merged again by the report: their stored split out
    out += _cut_out(cut, set(gone), printed, timetable, start, end, min_minutes, bucket_of)
    if dirty:
        out += _split_again(
            conn,
            models,
            unit_id,
            timetable,
            start,
            end,
            min_minutes,
            bucket_of,
            cut,
            gone,
            rolled,
            {m: printed[m] for m in dirty},
        )
    return out


def _stored_split(
    conn: sa.Connection, by_marker: bool, buckets: str, params: dict[str, Any]
) -> tuple[list[tuple[Any, int, int]], list[date], list[tuple[date, int]], list[tuple[date, int]]]:
    """The stored measures of what agrees, grouped in PostgreSQL, and in the same statement
    the months not known to agree and the (month, tutor) of them that do not (and of those,
    the ones whose roll-up row was there): (summed, dirty months, gone, rolled)."""
    out: list[tuple[Any, int, int]] = []
    dirty: list[date] = []
    gone: list[tuple[date, int]] = []
    rolled: list[tuple[date, int]] = []
    # on a generic plan: planned afresh, as the reports' other statements are, planning it
    # took twice as long as running it
    statement = summed_statement(by_marker, buckets)
    compiled = summed_compiled(by_marker, buckets)
    for kind, value, marker, summed_during, month, was_rolled in rows_on_generic_plan(
        conn, statement, params, compiled
    ):
        if kind:
            out.append((value, marker, int(summed_during)))
        elif marker is None:
            dirty.append(month)
        else:
            gone.append((month, marker))
            if was_rolled:
                rolled.append((month, marker))
    return out, dirty, gone, rolled


#: one (month, tutor)'s split: the roll-up row's version, its long blocks, and each block's
#: (start, stored minutes, length, inside, start in a class, long)
Measured = tuple[int, int, list[tuple[datetime, int, int, int, bool, bool]]]


def _params(
    conn: sa.Connection,
    unit_id: int,
    marker_id: int | None,
    start: datetime,
    end: datetime,
    printed: dict[date, str],
    min_minutes: int,
    starts: list[datetime] | None,
) -> tuple[dict[str, Any], str]:
    """:func:`whole_blocks`' statement's parameters, and how it is given its buckets: one,
    or their starts as packed binary arrays (psycopg 3) or as an array."""
    params: dict[str, Any] = {
        "unit": unit_id,
        "months": list(printed),
        "prints": list(printed.values()),
        "least": min_minutes,
        "since": start,
        "until": end,
    }
    if marker_id is not None:
        params["marker"] = marker_id
    buckets = "one"
    if starts and len(starts) > 1:
        buckets = "packed" if binary_arrays(conn) else "array"
        params["starts"] = (
            PackedTimes.of([to_micros(s) - PG_EPOCH for s in starts])
            if buckets == "packed"
            else starts
        )
    return params, buckets


def _cut_out(
    cut: Mapping[tuple[int, datetime], tuple[datetime, int] | None],
    failing: set[tuple[date, int]],
    printed: dict[date, str],
    timetable: Timetable,
    start: datetime,
    end: datetime,
    min_minutes: int,
    bucket_of: Callable[[datetime], Any],
) -> list[tuple[Any, int, int]]:
    """The stored split of the ``cut`` blocks, negated: :func:`whole_blocks` counted them,
    and the report merges and splits them again."""
    out: list[tuple[Any, int, int]] = []
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
    return out


def _split_again(
    conn: sa.Connection,
    models: Models,
    unit_id: int,
    timetable: Timetable,
    start: datetime,
    end: datetime,
    min_minutes: int,
    bucket_of: Callable[[datetime], Any],
    cut: Mapping[tuple[int, datetime], tuple[datetime, int] | None],
    gone: list[tuple[date, int]],
    rolled: list[tuple[date, int]],
    prints: dict[date, str],
) -> list[tuple[Any, int, int]]:
    """The months not known to agree (``prints``), split again from their blocks and
    stored: the range's blocks of them that are not ``cut``, in their buckets."""
    out: list[tuple[Any, int, int]] = []
    split = _split_months(conn, unit_id, timetable, rolled)
    for (_, marker), (_, _, measured) in split.items():
        for first, minutes, length, inside, at_start, _ in measured:
            if start <= first < end and (marker, first) not in cut:
                credited = max(minutes, min_minutes)
                split_ = split_minutes(credited, length, inside, at_start)
                out.append((bucket_of(first), marker, split_))
    _store(conn, models, unit_id, gone, split, prints)
    return out


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
    # the end of each month's window, worked out once a month rather than once a block
    reach = {month: window(month)[1] for month, _ in pairs}
    for month, marker, seen, first, last, minutes in rows:
        key = (month, marker)
        entry = found.setdefault(key, (seen, 0, []))
        if first is None:
            continue
        a, b = to_micros(first), to_micros(last)
        length, inside, at_start = timetable.inside(marker, a, b)
        long = b > reach[month]
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
    """Keep ``split`` in place of what ``gone`` (month, marker) had stored, and then, for
    each month of ``prints`` (those not known to agree, whose classes they give: ``gone``
    lies in them), whether every tutor's stored split of it now agrees, in a savepoint:
    when a concurrent report of the unit is storing (it holds the unit's lock), when
    another stored a row after this report's snapshot, or on a read-only replica, nothing
    is stored.

    A month is known to agree (:data:`CHECKED`) only as one statement finds it, under the
    lock, with the roll-up's version of it read in that statement: the version changes
    with any of its roll-up's rows, so what is stored of it is used only while that holds.
    Every store writes the row of each month it touches, so a store whose snapshot is
    older than another's that touched the month fails (REPEATABLE READ) rather than
    vouching for what it did not see; at READ COMMITTED the statement sees every store
    committed before the lock was taken."""
    month_rows, block_rows = _rows(unit_id, split, prints)
    savepoint = conn.begin_nested()
    try:
        locked = conn.execute(
            sa.select(sa.func.pg_try_advisory_xact_lock(lock_hash(f"class_store:{unit_id}")))
        ).scalar()
        if not locked:
            savepoint.rollback()
            return
        if gone:
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
        _check(conn, models, unit_id, prints)
        savepoint.commit()
    except sa.exc.DBAPIError:
        savepoint.rollback()


def _rows(
    unit_id: int, split: dict[tuple[date, int], Measured], prints: dict[date, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows :func:`_store` writes of ``split``: each (month, tutor)'s, and each of its
    blocks that meets a class."""
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
    return month_rows, block_rows


def _check(conn: sa.Connection, models: Models, unit_id: int, prints: dict[date, str]) -> None:
    """Record, for each month of ``prints`` (its classes' fingerprint), the roll-up's version
    of it if every tutor's stored split of it agrees now, else that it is not known to."""
    if not prints:
        return
    months = sorted(prints)
    found = conn.execute(
        sa.text(VERIFIED).bindparams(
            sa.bindparam("unit", unit_id, type_=sa.BigInteger),
            sa.bindparam("months", months, type_=postgresql.ARRAY(sa.Date)),
            sa.bindparam("prints", [prints[m] for m in months], type_=postgresql.ARRAY(sa.Text)),
        )
    ).all()
    rows = [
        {
            "unit_id": unit_id,
            "month": month,
            "version": version if agrees else None,
            "fingerprint": prints[month],
        }
        for month, version, agrees in sorted(found)
    ]
    upsert = postgresql.insert(models.ClassChecked)
    conn.execute(
        upsert.on_conflict_do_update(
            index_elements=["unit_id", "month"],
            set_={"version": upsert.excluded.version, "fingerprint": upsert.excluded.fingerprint},
        ),
        rows,
    )
