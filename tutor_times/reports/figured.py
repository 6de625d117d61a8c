"""Adding up the figures each closed session keeps (:mod:`tutor_times.store.figures`) over a
range, merging again (R10) only the blocks the range cuts and the sessions near an open one,
with R12's split of each block when a timetable is given. What the summary and the timeline
are made of."""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..store import class_store
from ..store.class_times import Timetable
from ..store.models import Models
from ..store.sql import bound_array, last_activity_of
from .merge import block_minutes, figured_assessments
from .scope import Scope


def figured_by(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    *,
    min_minutes: int,
    starts: list[datetime] | None = None,
    per_marker: bool = True,
    timetable: Timetable | None = None,
    pieces: list[tuple[datetime, datetime]] | None = None,
) -> dict[tuple[int | None, int | None], list[int]]:
    """Sessions, assessments, minutes (R10) and during-class minutes (R12, 0 without a
    ``timetable``) per (bucket, marker) of the scope, from the figures each closed session
    keeps (:mod:`~tutor_times.store.figures`), in one pass over the range (and, for the split, one over the
    split stored of a unit's blocks on PostgreSQL, :mod:`~tutor_times.store.class_store`, or over its stored
    blocks elsewhere).

    ``starts`` are the buckets' first instants (the bucket is None without them); without
    ``per_marker`` every marker is None. A block whose sessions all start in the range, and
    which ends before every open session of the range starts, counts its stored minutes.
    The rest are read session by session and merged here, as the range merges them: blocks
    cut by the range's start or end, and anything near an open session (counted live) —
    a few sessions, however long the range.

    ``pieces`` ([start, end) each, within the scope): only the sessions that start in them
    are counted, each as the whole scope counts it (the summary adds the months between
    them from :mod:`~tutor_times.store.rollups`); without them, every session of the scope.
    """
    where = scope.where(models)
    read = _Read.of(conn, models, scope, min_minutes, starts, per_marker)
    rows = _stored(conn, models, scope, min_minutes, starts, per_marker, pieces)
    totals = _Totals(starts, per_marker)
    for value, marker, n, assessed, minutes, _ in rows:
        totals.add(value, marker, n, int(assessed or 0), int(minutes or 0))
    cut_blocks: dict[tuple[int, datetime], tuple[datetime, int] | None] = {}
    if any(cut for *_, cut in rows):
        spans, cut_blocks = _cut(conn, models, read, where, rows, totals)
        for value, marker, minutes, during in block_minutes(spans, min_minutes, timetable):
            totals.add(value, marker, 0, 0, minutes, during)
    if timetable is not None:
        _during_class(conn, models, read, scope, where, timetable, totals, min_minutes, cut_blocks)
    return totals.found


def _per_bucket(
    starts: list[datetime],
    scope: Scope,
    figures: list[Any],
    where: list[Any],
    ms: Any,
    per_marker: bool,
) -> Any:
    """``figures`` of the sessions ``where`` holds, per bucket (and marker), on PostgreSQL:
    each bucket's own range of the (unit, start) index, one after another. Grouped by a
    bucket expression instead, the planner cannot count the groups, guesses one per
    session, and sorts every session of the range rather than hashing a few hundred.

    The buckets are as :func:`bucket_index` makes them (one before the first start counts
    in the first). Without ``per_marker`` an empty bucket gives a row too, of zeros and
    NULLs."""
    # one array of starts (dumping a timestamp costs more than reading a bucket's sessions)
    lows = [min(starts[0], scope.start), *starts[1:]]
    first = (
        sa.func.unnest(bound_array(lows, ms.start_time.type))
        .table_valued("low", with_ordinality="n")
        .render_derived(name="first")
    )
    f = first.c
    bucket = sa.select(f.n, f.low, sa.func.lead(f.low).over(order_by=f.n).label("high")).subquery(
        "bucket"
    )
    b = bucket.c
    inner = (
        sa.select(*figures)
        .where(
            *where,
            ms.start_time >= b.low,
            ms.start_time < sa.func.coalesce(b.high, scope.end),
        )
        .group_by(*([ms.marker_id] if per_marker else []))
        .correlate(bucket)
        .lateral("figures")
    )
    return sa.select(b.n - 1, inner).select_from(bucket).join(inner, sa.true())


def _split(
    conn: sa.Connection, timetable: Timetable, blocks: Any, since: datetime
) -> list[tuple[Any, int, int]]:
    """(bucket, marker, during-class minutes) of ``blocks`` (bucket, unit, marker, first,
    last, minutes): summed in PostgreSQL, block by block in Python elsewhere."""
    if conn.dialect.name != "postgresql":
        return [
            (b.bucket, b.marker, timetable.during(b.unit, b.marker, b.first, b.last, b.minutes))
            for b in conn.execute(blocks)
        ]
    p = timetable.split_blocks(conn, blocks, since=since).c
    # the during-class sum as an integer (PostgreSQL's sum of bigints is numeric, which
    # comes back as a Decimal per row)
    during = sa.cast(sa.func.sum(p.during), sa.BigInteger)
    rows = conn.execute(sa.select(p.bucket, p.marker, during).group_by(p.bucket, p.marker))
    return [(value, marker, int(d)) for value, marker, d in rows]


def bucket_index(conn: sa.Connection, starts: list[datetime]) -> Callable[[Any], Any]:
    """A start time's bucket, as SQL: the index of the last of ``starts`` at or before it.

    Both backends compare UTC instants with the same bucket starts, so they agree to the
    microsecond whatever the zone; no zone name reaches the database. PostgreSQL's
    ``width_bucket`` does it by binary search; elsewhere a CASE walks the starts. A time
    before the first start counts in the first bucket (the scope never holds one).
    """
    return _bucket_index(conn.dialect.name, starts)


def _bucket_index(dialect: str, starts: Sequence[datetime]) -> Callable[[Any], Any]:
    """:func:`bucket_index` on the backend named ``dialect``."""
    if len(starts) == 1:
        return lambda _: sa.literal(0)
    if dialect == "postgresql":
        thresholds = bound_array(list(starts), sa.DateTime(timezone=True))
        return lambda t: sa.func.greatest(sa.func.width_bucket(t, thresholds), 1) - 1
    return lambda t: sa.case(*[(t < s, i) for i, s in enumerate(starts[1:])], else_=len(starts) - 1)


def _during_class(
    conn: sa.Connection,
    models: Models,
    read: _Read,
    scope: Scope,
    where: list[Any],
    timetable: Timetable,
    totals: _Totals,
    min_minutes: int,
    cut_blocks: dict[tuple[int, datetime], tuple[datetime, int] | None],
) -> None:
    """The during-class minutes (R12) of the stored blocks the range does not cut, added to
    ``totals``: from the split stored of them on PostgreSQL (:mod:`~tutor_times.store.class_store`), else as
    the blocks are split."""
    ms = models.MarkingSession
    starts = totals.starts
    if class_store.usable(conn, models, scope, timetable):
        # the whole blocks' split from what is stored of it (R12 all the same)
        assert scope.unit_id is not None
        for value, marker, during in class_store.whole_blocks(
            conn,
            models,
            scope.unit_id,
            scope.marker_id,
            scope.start,
            scope.end,
            timetable,
            min_minutes=min_minutes,
            starts=starts,
            bucket_of=totals.bucket_of,
            cut=cut_blocks,
        ):
            totals.add(value, marker, 0, 0, 0, during)
    else:
        # the stored blocks whose sessions all start in the range, as the blocks are split
        index = read.index or (lambda _: sa.literal(0))
        whole = sa.and_(ms.block_minutes.is_not(None), sa.not_(read.is_cut))
        blocks = sa.select(
            index(ms.block_start).label("bucket"),
            ms.unit_id.label("unit"),
            ms.marker_id.label("marker"),
            ms.block_start.label("first"),
            ms.block_end.label("last"),
            read.credited.label("minutes"),
        ).where(*where, whole)
        for value, marker, during in _split(conn, timetable, blocks, scope.start):
            totals.add(value, marker, 0, 0, 0, during)


@dataclass(frozen=True)
class _Read:
    """What :func:`figured_by`'s statements share: whether a session's stored block is cut
    (by the range, or by an open session's nearness), the minutes it is credited with, and
    its bucket."""

    is_cut: Any
    credited: Any
    index: Callable[[Any], Any] | None
    label: Any
    keys: list[Any]
    figures: list[Any]

    @classmethod
    def of(
        cls,
        conn: sa.Connection,
        models: Models,
        scope: Scope,
        min_minutes: int,
        starts: list[datetime] | None,
        per_marker: bool,
    ) -> _Read:
        """Made once per backend, tables, scope, shortest session, buckets and grouping, and
        reused (the same range asked again, as a page reloaded, builds none of these
        expressions again: SQLAlchemy's expressions are immutable)."""
        bounds = None if starts is None else tuple(starts)
        return _read_of(conn.dialect.name, models, scope, min_minutes, bounds, per_marker)

    @classmethod
    def made(
        cls,
        dialect: str,
        models: Models,
        scope: Scope,
        min_minutes: int,
        starts: tuple[datetime, ...] | None,
        per_marker: bool,
    ) -> _Read:
        ms = models.MarkingSession
        # the first start of the range's sessions without figures: the open ones (and any
        # closed one a writer left without), counted live; a stored block that reaches it is
        # merged again with them (a report reads on one snapshot: the statements agree).
        unfigured = ms.__table__.alias("unfigured").c
        first_unfigured = (
            sa.select(sa.func.min(unfigured.start_time))
            .where(*scope.where_on(unfigured), unfigured.block_start.is_(None))
            .scalar_subquery()
        )
        cut = [
            ms.block_start.is_(None),
            ms.block_start < scope.start,
            ms.block_last_start >= scope.end,
            ms.block_end >= first_unfigured,
        ]
        # a comparison with no unfigured session to compare with is no cut (NULL is not true)
        is_cut = sa.case((sa.or_(*cut), True), else_=False)
        several = starts is not None and len(starts) > 1
        index = _bucket_index(dialect, starts) if starts is not None and several else None
        label = (sa.literal(0) if index is None else index(ms.start_time)).label("bucket")
        keys = [label] if several else []
        keys += [ms.marker_id] if per_marker else []
        credited = sa.case(
            (ms.block_minutes.is_(None), 0),
            (ms.block_minutes < min_minutes, min_minutes),
            else_=ms.block_minutes,
        )
        # the cut sessions' ids, gathered by the same pass on PostgreSQL (elsewhere a count,
        # and the ids found again by _cut)
        cut_of = (
            sa.func.array_agg(ms.id).filter(is_cut)
            if dialect == "postgresql"
            else sa.func.sum(sa.case((is_cut, 1), else_=0))
        )
        # every stored block's minutes, the cut ones' taken off again as they are read: one
        # test of each session for a cut, not two (the planner would repeat the CASE)
        figures = [
            (ms.marker_id if per_marker else sa.null()).label("marker"),
            sa.func.count().label("n"),
            sa.func.sum(figured_assessments(models)).label("a"),
            sa.func.sum(credited).label("minutes"),
            cut_of.label("cut"),
        ]
        return cls(is_cut, credited, index, label, keys, figures)


#: :meth:`_Read.made`, kept for the ranges asked most lately
_read_of = functools.lru_cache(maxsize=64)(_Read.made)


class _Totals:
    """Sessions, assessments, minutes and during-class minutes per (bucket, marker)."""

    def __init__(self, starts: list[datetime] | None, per_marker: bool) -> None:
        self.starts = starts
        self.per_marker = per_marker
        self.found: dict[tuple[int | None, int | None], list[int]] = {}

    def bucket_of(self, first: datetime) -> int | None:
        """A block's bucket as bucket_index gives it (a block is labelled by its first)."""
        return None if self.starts is None else max(bisect_right(self.starts, first) - 1, 0)

    def add(self, value: Any, marker: int, *figures: int) -> None:
        key = (None if self.starts is None else value, marker if self.per_marker else None)
        found = self.found.setdefault(key, [0, 0, 0, 0])
        for i, figure in enumerate(figures):
            found[i] += figure


def _stored(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    min_minutes: int,
    starts: list[datetime] | None,
    per_marker: bool,
    pieces: list[tuple[datetime, datetime]] | None,
) -> list[Any]:
    """Every session counted where it starts, and a stored block's minutes where it starts,
    unless it is cut (:func:`_stored_statement`)."""
    statement = _stored_statement(
        conn.dialect.name,
        models,
        scope,
        min_minutes,
        None if starts is None else tuple(starts),
        per_marker,
        None if pieces is None else tuple(pieces),
    )
    return list(conn.execute(statement).all())


@functools.lru_cache(maxsize=64)
def _stored_statement(
    dialect: str,
    models: Models,
    scope: Scope,
    min_minutes: int,
    starts: tuple[datetime, ...] | None,
    per_marker: bool,
    pieces: tuple[tuple[datetime, datetime], ...] | None,
) -> Any:
    """:func:`_stored`'s statement, made once for what it depends on and reused (as
    :meth:`_Read.of`). Grouped by (bucket, marker) only, or bucket by bucket (_per_bucket):
    a planner that cannot count the groups sorts every session instead of hashing a few
    hundred groups."""
    ms = models.MarkingSession
    read = _read_of(dialect, models, scope, min_minutes, starts, per_marker)
    where = scope.where(models)
    postgres = dialect == "postgresql"
    several = starts is not None and len(starts) > 1
    # the pieces are PostgreSQL's (the months between them are rolled up there alone)
    assert pieces is None or (postgres and not several)
    if postgres and several:
        assert starts is not None
        return _per_bucket(list(starts), scope, read.figures, where, ms, per_marker)
    # each piece's own range of starts (none: the scope's); a piece at a time: each reads
    # its own range of the index
    within = [[ms.start_time >= low, ms.start_time < high] for low, high in pieces or []] or [[]]
    counted = [
        sa.select(read.label, *read.figures).where(*where, *piece).group_by(*read.keys)
        for piece in within
    ]
    return counted[0] if len(counted) == 1 else sa.union_all(*counted)


def _cut(
    conn: sa.Connection,
    models: Models,
    read: _Read,
    where: list[Any],
    rows: list[Any],
    totals: _Totals,
) -> tuple[
    dict[tuple[int, int], list[tuple[datetime, datetime, int | None]]],
    dict[tuple[int, datetime], tuple[datetime, int] | None],
]:
    """The sessions of the stored blocks the range cuts, read one by one, their stored minutes
    taken off ``totals`` (they are merged again by the caller): each tutor's (start, end,
    bucket), and the cut blocks by (marker, block start) with the block's end and minutes when
    its first session is read, else None."""
    ms = models.MarkingSession
    postgres = conn.dialect.name == "postgresql"
    spans: dict[tuple[int, int], list[tuple[datetime, datetime, int | None]]] = {}
    cut_blocks: dict[tuple[int, datetime], tuple[datetime, int] | None] = {}
    # found from the covering index alone, then read by id (their ends are not in it)
    chosen = (
        ms.id == sa.any_(bound_array([i for *_, ids in rows for i in ids or ()], sa.BigInteger))
        if postgres
        else ms.id.in_(sa.select(ms.id).where(*where, read.is_cut).scalar_subquery())
    )
    ends = sa.case((ms.end_time.is_(None), last_activity_of(models)), else_=ms.end_time)
    for unit, marker, first, end, stored, block, block_end, block_stored in conn.execute(
        sa.select(
            ms.unit_id,
            ms.marker_id,
            ms.start_time,
            ends,
            read.credited,
            ms.block_start,
            ms.block_end,
            ms.block_minutes,
        ).where(chosen)
    ):
        value = totals.bucket_of(first)
        spans.setdefault((unit, marker), []).append((first, end, value))
        totals.add(value, marker, 0, 0, -stored)  # counted by _stored, merged again
        if block is not None:
            first_of = None if block_stored is None else (block_end, block_stored)
            cut_blocks[marker, block] = cut_blocks.get((marker, block)) or first_of
    return spans, cut_blocks
