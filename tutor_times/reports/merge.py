"""R10's merge of a tutor's sessions into blocks, from the raw sessions: a walk over each
tutor's sessions in Python, one statement in SQL on PostgreSQL, both giving each block's
minutes (R4) and assessments."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..core.accounting import duration_minutes, overlapping
from ..core.constants import ASSESSING
from ..store.class_times import Timetable
from ..store.models import Models
from .scope import B, Scope, last_activity


def _assessments_of(models: Models) -> Any:
    """A correlated count of the session's assessments. Per session, it reads the
    (marking_session_id, created_at) index — covering on PostgreSQL — rather than joining
    every activity of the range, which planners turn into a scan of the whole table."""
    ms, act = models.MarkingSession, models.SessionActivity
    return (
        sa.select(sa.func.count())
        .where(act.marking_session_id == ms.id, act.action == ASSESSING)
        .scalar_subquery()
    )


def figured_assessments(models: Models) -> Any:
    """A session's assessments: those its figures keep once it is closed and figured, else
    counted (:func:`_assessments_of`), as :mod:`~tutor_times.store.figures` reads them."""
    ms = models.MarkingSession
    unfigured = sa.or_(ms.block_start.is_(None), ms.assessments.is_(None))
    return sa.case((unfigured, _assessments_of(models)), else_=ms.assessments)


def merged_blocks(
    spans: Iterable[tuple[datetime, datetime, B]],
) -> list[tuple[datetime, datetime, B]]:
    """R10 for one tutor in one unit: (start, end, bucket) spans merged into blocks.

    Spans that overlap or touch become one block, labelled with the bucket of its first
    span (the bucket the block starts in). Sorted by (start, end), exactly as the SQL merge
    orders them, so both give the same blocks.
    """
    ordered = sorted(spans, key=lambda span: (span[0], span[1]))
    return [
        (block[0][0], max(span[1] for span in block), block[0][2])
        for block in overlapping(ordered, lambda span: span[0], lambda span: span[1])
    ]


def merged_split_by(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    *,
    min_minutes: int,
    bucket: Callable[[Any], Any] | None = None,
    timetable: Timetable | None = None,
) -> dict[tuple[Any, int], tuple[int, int]]:
    """R10: minutes per (bucket, marker) of the scope's sessions.

    A tutor's overlapping sessions in a unit are merged into blocks over the whole scope
    (never per bucket, or a block crossing a bucket's edge would count twice); each block
    counts as a session would (R4) and goes wholly to the bucket its first session starts
    in. ``bucket`` maps a start time (a SQL expression) to its bucket; without it every
    block is in bucket None. So the buckets' minutes always add up to the summary's.

    PostgreSQL merges in SQL (gaps and islands: a session starts a new block when it starts
    after every earlier one of its tutor has ended), so only one row per tutor and bucket
    comes back. Elsewhere :func:`merged_blocks` merges the sessions here.

    Each value is (minutes, during-class minutes): with a ``timetable``, each block's
    minutes are split by R12 (:mod:`~tutor_times.store.class_times`) in the same pass; without one, 0.
    """
    if conn.dialect.name == "postgresql":
        return _merged_minutes_in_sql(conn, models, scope, min_minutes, bucket, timetable)
    ms = models.MarkingSession
    label = (sa.null() if bucket is None else bucket(ms.start_time)).label("bucket")
    spans: dict[tuple[int, int], list[tuple[datetime, datetime, Any]]] = {}
    for unit, marker, start, last, value in conn.execute(
        sa.select(ms.unit_id, ms.marker_id, ms.start_time, last_activity(models), label).where(
            *scope.where(models)
        )
    ):
        spans.setdefault((unit, marker), []).append((start, last, value))
    totals: dict[tuple[Any, int], tuple[int, int]] = {}
    for value, marker, minutes, during in block_minutes(spans, min_minutes, timetable):
        so_far = totals.get((value, marker), (0, 0))
        totals[value, marker] = (so_far[0] + minutes, so_far[1] + during)
    return totals


def block_minutes(
    spans: dict[tuple[int, int], list[tuple[datetime, datetime, B]]],
    min_minutes: int,
    timetable: Timetable | None,
) -> Iterator[tuple[B, int, int, int]]:
    """Each tutor's (unit, marker) spans merged (R10): (bucket, marker, minutes, during-class
    minutes) of every block — its minutes as a session's (R4), split by the classes it
    overlaps (R12; 0 without a ``timetable``)."""
    for (unit, marker), tutor_spans in spans.items():
        for first, last, value in merged_blocks(tutor_spans):
            minutes = duration_minutes(first, last, min_minutes)
            during = (
                0 if timetable is None else timetable.during(unit, marker, first, last, minutes)
            )
            yield value, marker, minutes, during


def _merged_minutes_in_sql(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    min_minutes: int,
    bucket: Callable[[Any], Any] | None,
    timetable: Timetable | None = None,
) -> dict[tuple[Any, int], tuple[int, int]]:
    """:func:`merged_split_by` as one PostgreSQL query: gaps and islands."""
    blocks = _blocks_in_sql(models, scope)
    b = blocks.c
    value = (sa.null() if bucket is None else bucket(b.first)).label("bucket")
    minutes = sa.func.greatest(min_minutes, sa.func.floor(b.seconds / 60))  # R4, per block
    per_block = sa.select(value, b.marker, minutes.label("minutes")).subquery("per_block")
    during: Any = sa.literal(0)
    if timetable is not None:
        # R12: each block's minutes split by the classes it overlaps
        per_block = timetable.split_blocks(
            conn,
            sa.select(value, b.unit, b.marker, b.first, b.last, minutes.label("minutes")),
            since=scope.start,
        )
        during = per_block.c.during
    p = per_block.c
    # the during-class sum as an integer (PostgreSQL's sum of bigints is numeric, which
    # comes back as a Decimal per row: a cost paid per tutor and bucket)
    rows = conn.execute(
        sa.select(
            p.bucket, p.marker, sa.func.sum(p.minutes), sa.cast(sa.func.sum(during), sa.BigInteger)
        ).group_by(p.bucket, p.marker)
    )
    return {(value, marker): (int(total), int(d)) for value, marker, total, d in rows}


def _blocks_in_sql(models: Models, scope: Scope) -> Any:
    """R10's blocks of the scope's sessions as a PostgreSQL subquery (unit, marker, first,
    last, seconds): a session starting at or before the latest end of its tutor's earlier
    sessions is in their block (gaps and islands)."""
    ms = models.MarkingSession
    s = (
        sa.select(
            ms.unit_id.label("unit"),
            ms.marker_id.label("marker"),
            ms.start_time.label("st"),
            last_activity(models).label("en"),
        )
        .where(*scope.where(models))
        .subquery("s")
    )
    tutor = [s.c.unit, s.c.marker]
    order = [s.c.st, s.c.en]
    ended_before = sa.func.max(s.c.en).over(partition_by=tutor, order_by=order, rows=(None, -1))
    flagged = sa.select(
        *tutor,
        *order,
        sa.case((s.c.st <= ended_before, 0), else_=1).label("starts_block"),
    ).subquery("flagged")
    f = flagged.c
    numbered = sa.select(
        f.unit,
        f.marker,
        f.st,
        f.en,
        sa.func.sum(f.starts_block)
        .over(partition_by=[f.unit, f.marker], order_by=[f.st, f.en], rows=(None, 0))
        .label("block"),
    ).subquery("numbered")
    n = numbered.c
    blocks = (
        sa.select(
            n.unit,
            n.marker,
            sa.func.min(n.st).label("first"),
            sa.func.max(n.en).label("last"),
            sa.extract("epoch", sa.func.max(n.en) - sa.func.min(n.st)).label("seconds"),
        )
        .group_by(n.unit, n.marker, n.block)
        .subquery("blocks")
    )
    return blocks


def counts_by(conn: sa.Connection, models: Models, scope: Scope, key: Any) -> Any:
    """(key, sessions, assessments) rows of the scope, grouped by ``key`` (SQL), in order."""
    per_session = (
        sa.select(key.label("key"), _assessments_of(models).label("n"))
        .where(*scope.where(models))
        .subquery()
    )
    c = per_session.c
    return conn.execute(
        sa.select(c.key, sa.func.count(), sa.func.sum(c.n)).group_by(c.key).order_by(c.key)
    )
