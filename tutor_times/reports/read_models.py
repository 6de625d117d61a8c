"""Report queries: pure functions of a connection, the tables and a :class:`Scope`.

The summary and the timeline add up the figures each closed session keeps
(:mod:`.figures`) in one pass over the indexed unit/start range, and merge again (R10) only
the blocks the range cuts and the sessions near an open one. Counted from the raw sessions
instead (``stored=False``), R10's merge is SQL on PostgreSQL and a walk over each tutor's
sessions elsewhere. An open session counts up to its last activity so far.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..core.accounting import UTC, duration_minutes, overlapping
from ..core.constants import ASSESSING
from ..store import class_store, rollups, tallies
from ..store.class_times import Timetable, with_split
from ..store.models import CLIENT, Models
from ..store.sql import bound_array, last_activity_of

B = TypeVar("B")


@dataclass(frozen=True)
class Scope:
    """Sessions that started in [start, end), of one unit and/or one marker when given."""

    start: datetime
    end: datetime
    unit_id: int | None = None
    marker_id: int | None = None

    def where(self, models: Models) -> list[Any]:
        return self.where_on(models.MarkingSession)

    def where_on(self, sessions: Any) -> list[Any]:
        """The scope's conditions on ``sessions`` (the model, or an alias's columns)."""
        clauses = [sessions.start_time >= self.start, sessions.start_time < self.end]
        if self.unit_id is not None:
            clauses.append(sessions.unit_id == self.unit_id)
        if self.marker_id is not None:
            clauses.append(sessions.marker_id == self.marker_id)
        return clauses


def _last_activity(models: Models) -> Any:
    """A session's end so far: its end_time once closed, else its last activity (R3)."""
    ms = models.MarkingSession
    return sa.func.coalesce(ms.end_time, last_activity_of(models), type_=ms.start_time.type)


def _minutes(row: Any, min_minutes: int) -> int:
    """Recorded minutes of a closed session; running minutes of an open one."""
    if row.duration_minutes is not None:
        return int(row.duration_minutes)
    return duration_minutes(row.start_time, row.last_activity, min_minutes)


def active_sessions(
    conn: sa.Connection,
    models: Models,
    *,
    unit_id: int,
    marker_id: int | None,
    live_after: datetime,
    min_minutes: int,
) -> list[dict[str, Any]]:
    """The unit's live sessions (of one marker, when given), oldest first.

    Live means open with a last activity after ``live_after`` (now − TIMEOUT): an idle
    session that no sweep has closed yet is over all the same (R2), so it is not listed.
    ``duration_minutes`` runs to the last activity so far: what the session would
    record if it ended now (R3, R4).
    """
    ms = models.MarkingSession
    last_activity = last_activity_of(models)
    last = last_activity.label("last_activity")
    query = sa.select(ms.id, ms.marker_id, ms.ip_address, ms.start_time, last).where(
        ms.unit_id == unit_id, ms.end_time.is_(None), last_activity > live_after
    )
    if marker_id is not None:
        query = query.where(ms.marker_id == marker_id)
    rows = conn.execute(query.order_by(ms.start_time, ms.id)).all()
    return [
        {
            "id": r.id,
            "marker_id": r.marker_id,
            "ip_address": r.ip_address,
            "start_time": r.start_time,
            "last_activity": r.last_activity,
            "duration_minutes": duration_minutes(r.start_time, r.last_activity, min_minutes),
            "active": True,
        }
        for r in rows
    ]


def _session_rows(
    conn: sa.Connection,
    models: Models,
    query: Any,
    live_after: datetime,
    min_minutes: int,
    *,
    by_action: bool = True,
) -> list[Any]:
    """Sessions selected by ``query`` (a WHERE/ORDER/LIMIT over marking_sessions), with
    their activity counts by action, as response rows. ``active`` is true for an open
    session whose last activity is after ``live_after``, as in :func:`active_sessions`.

    Without ``by_action`` a row has its assessments only, in the same statement: those a
    closed session's figures keep (:mod:`.figures`), the others' counted."""
    ms, act = models.MarkingSession, models.SessionActivity
    columns = [
        ms.id,
        ms.marker_id,
        ms.unit_id,
        ms.ip_address,
        ms.start_time,
        ms.end_time,
        ms.duration_minutes,
        _last_activity(models).label("last_activity"),
    ]
    if not by_action:
        columns.append(_figured_assessments(models).label("assessments"))
    rows = conn.execute(query.with_only_columns(*columns)).all()
    if not by_action:
        return [
            {**_session_row(r, live_after, min_minutes), "assessments": r.assessments} for r in rows
        ]
    counts: dict[int, dict[str, int]] = {r.id: {} for r in rows}
    reported: dict[int, int] = dict.fromkeys(counts, 0)
    if rows:
        for sid, action, source, n in conn.execute(
            sa.select(act.marking_session_id, act.action, act.source, sa.func.count())
            .where(act.marking_session_id.in_(list(counts)))
            .group_by(act.marking_session_id, act.action, act.source)
            .order_by(act.marking_session_id, act.action)
        ):
            counts[sid][action] = counts[sid].get(action, 0) + n
            if source == CLIENT:
                reported[sid] += n
    return [
        {
            **_session_row(r, live_after, min_minutes),
            "assessments": counts[r.id].get(ASSESSING, 0),
            "activities": counts[r.id],
            "client_activities": reported[r.id],
        }
        for r in rows
    ]


def _session_row(r: Any, live_after: datetime, min_minutes: int) -> dict[str, Any]:
    return {
        "id": r.id,
        "marker_id": r.marker_id,
        "unit_id": r.unit_id,
        "ip_address": r.ip_address,
        "start_time": r.start_time,
        "end_time": r.end_time,
        "last_activity": r.last_activity,
        "duration_minutes": _minutes(r, min_minutes),
        "active": r.end_time is None and r.last_activity > live_after,
    }


def units_of(conn: sa.Connection, models: Models, scope: Scope, *, min_minutes: int) -> list[int]:
    """The units the scope's sessions are in (a tutor's own report across units)."""
    ms = models.MarkingSession
    query = sa.select(ms.unit_id).where(*scope.where(models)).distinct().order_by(ms.unit_id)
    return list(conn.execute(query).scalars())


def sessions_page(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    *,
    page: int,
    per_page: int,
    live_after: datetime,
    min_minutes: int,
    by_action: bool = True,
) -> dict[str, Any]:
    """One page of the scope's sessions, newest first, and how many there are in all.

    Without ``by_action`` each session's assessments are its only counts (the
    calendar's): no second statement over the page's activities."""
    ms = models.MarkingSession
    where = scope.where(models)
    total = conn.execute(sa.select(sa.func.count()).select_from(ms).where(*where)).scalar_one()
    query = (
        sa.select(ms.id)
        .where(*where)
        .order_by(ms.start_time.desc(), ms.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    return {
        "page": page,
        "per_page": per_page,
        "total": total,
        "sessions": _session_rows(
            conn, models, query, live_after, min_minutes, by_action=by_action
        ),
    }


def session_detail(
    conn: sa.Connection,
    models: Models,
    session_id: int,
    *,
    live_after: datetime,
    min_minutes: int,
) -> dict[str, Any] | None:
    """One session with every activity, oldest first; None when there is no such session."""
    ms, act = models.MarkingSession, models.SessionActivity
    query = sa.select(ms.id).where(ms.id == session_id)
    rows = _session_rows(conn, models, query, live_after, min_minutes)
    if not rows:
        return None
    activities = conn.execute(
        sa.select(
            act.id,
            act.marking_session_id,
            act.action,
            act.created_at,
            act.project_id,
            act.task_id,
            act.task_definition_id,
            act.source,
        )
        .where(act.marking_session_id == session_id)
        .order_by(act.created_at, act.id)
    ).all()
    detail: dict[str, Any] = rows[0]
    detail["activity_list"] = [activity_row(a) for a in activities]
    return detail


def activity_row(a: Any) -> dict[str, Any]:
    return {
        "id": a.id,
        "marking_session_id": a.marking_session_id,
        "action": a.action,
        "created_at": a.created_at,
        "project_id": a.project_id,
        "task_id": a.task_id,
        "task_definition_id": a.task_definition_id,
        "source": a.source,
    }


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


def _figured_assessments(models: Models) -> Any:
    """A session's assessments: those its figures keep once it is closed and figured, else
    counted (:func:`_assessments_of`), as :mod:`.figures` reads them."""
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
    minutes are split by R12 (:mod:`.class_times`) in the same pass; without one, 0.
    """
    if conn.dialect.name == "postgresql":
        return _merged_minutes_in_sql(conn, models, scope, min_minutes, bucket, timetable)
    ms = models.MarkingSession
    label = (sa.null() if bucket is None else bucket(ms.start_time)).label("bucket")
    spans: dict[tuple[int, int], list[tuple[datetime, datetime, Any]]] = {}
    for unit, marker, start, last, value in conn.execute(
        sa.select(ms.unit_id, ms.marker_id, ms.start_time, _last_activity(models), label).where(
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
    ms = models.MarkingSession
    s = (
        sa.select(
            ms.unit_id.label("unit"),
            ms.marker_id.label("marker"),
            ms.start_time.label("st"),
            _last_activity(models).label("en"),
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


def _counts_by(conn: sa.Connection, models: Models, scope: Scope, key: Any) -> Any:
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
    keeps (:mod:`.figures`), in one pass over the range (and, for the split, one over the
    split stored of a unit's blocks on PostgreSQL, :mod:`.class_store`, or over its stored
    blocks elsewhere).

    ``starts`` are the buckets' first instants (the bucket is None without them); without
    ``per_marker`` every marker is None. A block whose sessions all start in the range, and
    which ends before every open session of the range starts, counts its stored minutes.
    The rest are read session by session and merged here, as the range merges them: blocks
    cut by the range's start or end, and anything near an open session (counted live) —
    a few sessions, however long the range.

    ``pieces`` ([start, end) each, within the scope): only the sessions that start in them
    are counted, each as the whole scope counts it (the summary adds the months between
    them from :mod:`.rollups`); without them, every session of the scope.
    """
    ms = models.MarkingSession
    where = scope.where(models)
    # each piece's own range of starts (none: the scope's)
    within = [[ms.start_time >= low, ms.start_time < high] for low, high in pieces or []] or [[]]
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
    index = bucket_index(conn, starts) if starts is not None and several else None
    label = (sa.literal(0) if index is None else index(ms.start_time)).label("bucket")
    keys = [label] if several else []
    keys += [ms.marker_id] if per_marker else []
    credited = sa.case(
        (ms.block_minutes.is_(None), 0),
        (ms.block_minutes < min_minutes, min_minutes),
        else_=ms.block_minutes,
    )
    # every session counts where it starts; a stored block's minutes where it starts, unless
    # it is cut. Grouped by (bucket, marker) only, or bucket by bucket (_per_bucket): a
    # planner that cannot count the groups sorts every session instead of hashing a few
    # hundred groups.
    postgres = conn.dialect.name == "postgresql"
    # the cut sessions' ids, gathered by the same pass on PostgreSQL (elsewhere a count, and
    # the ids found again below)
    cut_of = (
        sa.func.array_agg(ms.id).filter(is_cut)
        if postgres
        else sa.func.sum(sa.case((is_cut, 1), else_=0))
    )
    # every stored block's minutes, the cut ones' taken off again as they are read below:
    # one test of each session for a cut, not two (the planner would repeat the CASE)
    figures = [
        (ms.marker_id if per_marker else sa.null()).label("marker"),
        sa.func.count().label("n"),
        sa.func.sum(_figured_assessments(models)).label("a"),
        sa.func.sum(credited).label("minutes"),
        cut_of.label("cut"),
    ]
    # the pieces are PostgreSQL's (the months between them are rolled up there alone)
    assert pieces is None or (postgres and not several)
    if postgres and several:
        assert starts is not None
        rows = conn.execute(_per_bucket(starts, scope, figures, where, ms, per_marker)).all()
    else:
        # a piece at a time: each reads its own range of the index
        counted = [
            sa.select(label, *figures).where(*where, *piece).group_by(*keys) for piece in within
        ]
        rows = conn.execute(counted[0] if len(counted) == 1 else sa.union_all(*counted)).all()
    totals: dict[tuple[int | None, int | None], list[int]] = {}

    def add(value: Any, marker: int, *figures: int) -> None:
        key = (None if starts is None else value, marker if per_marker else None)
        found = totals.setdefault(key, [0, 0, 0, 0])
        for i, figure in enumerate(figures):
            found[i] += figure

    for value, marker, n, assessed, minutes, _ in rows:
        add(value, marker, n, int(assessed or 0), int(minutes or 0))
    spans: dict[tuple[int, int], list[tuple[datetime, datetime, int | None]]] = {}
    # the stored blocks the range cuts, by (marker, block start): the block's end and
    # minutes when its first session is read, else None
    cut_blocks: dict[tuple[int, datetime], tuple[datetime, int] | None] = {}
    if any(cut for *_, cut in rows):
        # found from the covering index alone, then read by id (their ends are not in it)
        chosen = (
            ms.id == sa.any_(bound_array([i for *_, ids in rows for i in ids or ()], sa.BigInteger))
            if postgres
            else ms.id.in_(sa.select(ms.id).where(*where, is_cut).scalar_subquery())
        )
        ends = sa.case((ms.end_time.is_(None), last_activity_of(models)), else_=ms.end_time)
        for unit, marker, first, end, stored, block, block_end, block_stored in conn.execute(
            sa.select(
                ms.unit_id,
                ms.marker_id,
                ms.start_time,
                ends,
                credited,
                ms.block_start,
                ms.block_end,
                ms.block_minutes,
            ).where(chosen)
        ):
            # its bucket as bucket_index gives it (a block is labelled by its first)
            value = None if starts is None else max(bisect_right(starts, first) - 1, 0)
            spans.setdefault((unit, marker), []).append((first, end, value))
            add(value, marker, 0, 0, -stored)  # counted above, merged again here
            if block is not None:
                first_of = None if block_stored is None else (block_end, block_stored)
                cut_blocks[marker, block] = cut_blocks.get((marker, block)) or first_of
    for value, marker, minutes, during in block_minutes(spans, min_minutes, timetable):
        add(value, marker, 0, 0, minutes, during)
    if timetable is not None and class_store.usable(conn, models, scope, timetable):
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
            bucket_of=lambda first: (
                None if starts is None else max(bisect_right(starts, first) - 1, 0)
            ),
            cut=cut_blocks,
        ):
            add(value, marker, 0, 0, 0, during)
    elif timetable is not None:
        # the stored blocks whose sessions all start in the range, as the blocks are split
        index = index or (lambda _: sa.literal(0))
        whole = sa.and_(ms.block_minutes.is_not(None), sa.not_(is_cut))
        blocks = sa.select(
            index(ms.block_start).label("bucket"),
            ms.unit_id.label("unit"),
            ms.marker_id.label("marker"),
            ms.block_start.label("first"),
            ms.block_end.label("last"),
            credited.label("minutes"),
        ).where(*where, whole)
        for value, marker, during in _split(conn, timetable, blocks, scope.start):
            add(value, marker, 0, 0, 0, during)
    return totals


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


def summary(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    *,
    min_minutes: int,
    timetable: Timetable | None = None,
    stored: bool = True,
    rolled: bool | None = None,
) -> dict[str, Any]:
    """Per tutor: sessions, minutes (R10), assessments, minutes per assessment; and totals.
    With a ``timetable``, each row's minutes are also split by R12 (during and outside class).

    From the stored figures unless ``stored`` is false: then every session is counted
    and merged again. On PostgreSQL a unit's range of :data:`ROLLED_FROM` or more (or any,
    with ``rolled``) adds up the whole months between its ends from :mod:`.rollups`, where
    no block the range cuts can reach, and counts its ends from the figures: the same
    numbers."""
    if stored:
        if rolled is None:
            rolled = scope.end - scope.start >= ROLLED_FROM
        months = (
            _rolled_months(conn, models, scope, min_minutes)
            if rolled and (timetable is None or class_store.usable(conn, models, scope, timetable))
            else None
        )
        figures = figured_by(
            conn,
            models,
            scope,
            min_minutes=min_minutes,
            timetable=timetable,
            pieces=None if months is None else months[1],
        )
        for tutor, counted in (months[0] if months else {}).items():
            found = figures.setdefault((None, tutor), [0, 0, 0, 0])
            for i, figure in enumerate(counted):
                found[i] += figure
        tutors = []
        for (_, marker), (n_sessions, n_assessments, total, during) in sorted(figures.items()):
            row = {"marker_id": marker, "sessions": n_sessions, "assessments": n_assessments}
            tutors.append(with_rate(row, total))
            if timetable is not None:
                with_split(row, during)
        totals = _totals(tutors)
        if timetable is not None:
            with_split(totals, sum(t["during_class_minutes"] for t in tutors))
        return {"tutors": tutors, "totals": totals}
    marker = models.MarkingSession.marker_id
    split = merged_split_by(conn, models, scope, min_minutes=min_minutes, timetable=timetable)
    minutes = {key: total for key, (total, _) in split.items()}
    tutors = [
        with_rate(
            {"marker_id": key, "sessions": n_sessions, "assessments": int(n_assessments)},
            minutes[None, key],
        )
        for key, n_sessions, n_assessments in _counts_by(conn, models, scope, marker)
    ]
    totals = _totals(tutors)
    if timetable is not None:
        for t in tutors:
            with_split(t, split[None, t["marker_id"]][1])
        with_split(totals, sum(t["during_class_minutes"] for t in tutors))
    return {"tutors": tutors, "totals": totals}


#: a unit's summary over a range at least this long adds up its whole months from the
#: roll-up (:mod:`.rollups`) on PostgreSQL
ROLLED_FROM = timedelta(days=62)


def _rolled_months(
    conn: sa.Connection, models: Models, scope: Scope, min_minutes: int
) -> tuple[dict[int, tuple[int, int, int]], list[tuple[datetime, datetime]]] | None:
    """The whole UTC months of a unit's range that no block the range cuts reaches, added up
    per tutor from :mod:`.rollups` — (sessions, assessments, minutes) — and the range's
    pieces either side of them, for :func:`figured_by`; None where there are none (or not
    on PostgreSQL, or for one tutor, or under a minimum the roll-up does not keep).

    A block is cut when it starts before the range, reaches its end, or ends at or after
    its first session without figures (counted live). Every session of such a block starts
    within the unit's longest block of the range's start, of its end or of that first
    session: the months between the range's start plus the longest block and the earlier
    of the others less it have none."""
    if (
        conn.dialect.name != "postgresql"
        or scope.unit_id is None
        or scope.marker_id is not None
        or not 1 <= min_minutes <= rollups.MAX_MINIMUM
    ):
        return None
    ms, months = models.MarkingSession, models.TutorMonths.c
    first_unfigured, longest = conn.execute(
        sa.select(
            sa.select(sa.func.min(ms.start_time))
            .where(*scope.where(models), ms.block_start.is_(None))
            .scalar_subquery(),
            sa.select(sa.func.max(months.longest))
            .where(months.unit_id == scope.unit_id)
            .scalar_subquery(),
        )
    ).one()
    if longest is None:
        return None
    end = scope.end if first_unfigured is None else min(scope.end, first_unfigured)
    try:
        whole = _whole_months(scope.start + longest, end - longest)
    except OverflowError:  # a range at the ends of the calendar
        whole = None
    if whole is None:
        return None
    low, high = whole
    rows = conn.execute(
        sa.select(
            months.marker_id,
            sa.func.sum(months.sessions),
            sa.func.sum(months.assessments),
            sa.func.sum(months.credited[min_minutes]),
            sa.func.sum(months.uncounted),
        )
        .where(months.unit_id == scope.unit_id, months.month >= low, months.month < high)
        .group_by(months.marker_id)
    ).all()
    if any(uncounted for *_, uncounted in rows):
        return None  # assessments to count from the activities: read as before
    counted = {marker: (int(n), int(a), int(m)) for marker, n, a, m, _ in rows}
    at = [datetime.combine(d, datetime.min.time(), UTC) for d in (low, high)]
    return counted, [(scope.start, at[0]), (at[1], scope.end)]


def _whole_months(start: datetime, end: datetime) -> tuple[date, date] | None:
    """The UTC months wholly within [start, end), as the first days of the first and of the
    one after the last; None if there is none (or they reach the calendar's last month)."""
    first = start.astimezone(UTC).date().replace(day=1)
    try:
        if datetime.combine(first, datetime.min.time(), UTC) != start:
            first = (first + timedelta(days=32)).replace(day=1)
    except OverflowError:
        return None
    after = end.astimezone(UTC).date().replace(day=1)
    return (first, after) if first < after else None


def _totals(tutors: list[dict[str, Any]]) -> dict[str, Any]:
    return with_rate(
        {
            "sessions": sum(t["sessions"] for t in tutors),
            "assessments": sum(t["assessments"] for t in tutors),
        },
        # different tutors' minutes are different people's time: they add up
        sum(t["minutes"] for t in tutors),
    )


def with_rate(row: dict[str, Any], minutes: int) -> dict[str, Any]:
    row["minutes"] = minutes
    row["minutes_per_assessment"] = (
        round(minutes / row["assessments"], 1) if row["assessments"] else None
    )
    return row


def _open_minutes(conn: sa.Connection, models: Models, scope: Scope, min_minutes: int) -> Any:
    """A session's minutes as SQL: recorded when closed, running so far when open.

    Open sessions are the live ones (within TIMEOUT of now), so they are few: their running
    minutes are computed here and inlined, keeping the rest of the sum in SQL.
    """
    ms = models.MarkingSession
    running = {
        sid: duration_minutes(start, last, min_minutes)
        for sid, start, last in conn.execute(
            sa.select(ms.id, ms.start_time, last_activity_of(models)).where(
                *scope.where(models), ms.end_time.is_(None)
            )
        )
    }
    if not running:
        return ms.duration_minutes
    return sa.case(running, value=ms.id, else_=ms.duration_minutes)


#: a range at least this long counts its tasks from the tallies on PostgreSQL. A shorter
#: one reads fewer sessions than the keys whose gaps could straddle it, each looked up
#: (measured in benchmarks/README.md, B3)
TALLIED_FROM = timedelta(weeks=8)


def tasks(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    *,
    min_minutes: int,
    tallied: bool | None = None,
) -> list[dict[str, Any]]:
    """Per task definition: assessments, distinct tasks and markers, and estimated minutes —
    each session's minutes shared equally among that session's assessments.

    On PostgreSQL a closed session's assessments come from the lists it keeps
    (:mod:`.figures`): a range reads its sessions, not every one of their activities; the
    others' from their activities. A unit's range of :data:`TALLIED_FROM` or more (or any,
    with ``tallied``) is counted from the unit's tallies (:mod:`.tallies`) instead, but for
    the partial UTC days at its edges and the sessions not tallied: the same numbers."""
    if tallied is None:
        tallied = scope.end - scope.start >= TALLIED_FROM
    tallied = (
        tallied
        and conn.dialect.name == "postgresql"
        and scope.unit_id is not None
        and scope.marker_id is None
    )
    days = _whole_days(scope) if tallied else None
    if days is None:
        found = {
            definition: (n, n_tasks, n_markers, minutes)
            for definition, n, n_tasks, n_markers, minutes in conn.execute(
                _task_figures(_assessed(conn, models, scope, min_minutes))
            )
        }
    else:
        found = _tallied_tasks(conn, models, scope, days, min_minutes)
    return [
        {
            "task_definition_id": definition,
            "assessments": n,
            "tasks": n_tasks,
            "markers": n_markers,
            "estimated_minutes": round(float(minutes), 1),
        }
        for definition, (n, n_tasks, n_markers, minutes) in sorted(
            found.items(), key=lambda item: (item[0] is None, item[0] or 0)
        )
    ]


def _assessed(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    min_minutes: int,
    *,
    kept_within: list[Scope] | None = None,
    shares: bool = True,
) -> Any:
    """One row per assessment of the ``scope``'s sessions (task definition, task, marker,
    the share of its session's minutes), as a subquery.

    On PostgreSQL the sessions whose lists agree (:func:`.tallies.kept`) read their
    lists, those of them that start within ``kept_within`` (default: the scope); the
    others read their activities. Without ``shares`` the share is NULL (not worked out)."""
    ms = models.MarkingSession
    own, n = _assessed_tasks(conn, models)
    # one row per assessment, with its session's minutes and assessment count beside it
    assessed: Any = (
        sa.select(
            own.c.task_definition_id,
            own.c.task_id,
            ms.marker_id,
            (
                _share(conn, _open_minutes(conn, models, scope, min_minutes), n)
                if shares
                else sa.null()
            ).label("share"),
        )
        .select_from(ms)
        .join(own, own.c.marking_session_id == ms.id)
        .where(*scope.where(models))
    )
    if conn.dialect.name == "postgresql":
        # lists that agree with the count beside them; the others' activities answer (never
        # NULL: a session is in exactly one of the two branches)
        kept = tallies.kept(ms.__table__)
        other = assessed.where(sa.not_(kept))
        kept_within = [scope] if kept_within is None else kept_within
        if not kept_within:
            return other.subquery()
        # each session's share of its minutes worked out once, not once per assessment
        # (fenced: flattened, the planner would divide on every row of the lists)
        sessions = (
            sa.select(
                ms.marker_id,
                ms.assessed_definitions,
                ms.assessed_tasks,
                _share(conn, ms.duration_minutes, sa.func.nullif(ms.assessments, 0)).label("share"),
            )
            .where(kept, sa.or_(*(sa.and_(*k.where(models)) for k in kept_within)))
            .offset(0)
            .subquery("kept")
        )
        k = sessions.c
        listed = (
            sa.func.unnest(k.assessed_definitions, k.assessed_tasks)
            .table_valued("task_definition_id", "task_id")
            .render_derived(name="listed")
        )
        from_lists = (
            sa.select(listed.c.task_definition_id, listed.c.task_id, k.marker_id, k.share)
            .select_from(sessions)
            .join(listed, sa.true())
        )
        assessed = sa.union_all(from_lists, other)
    return assessed.subquery()


def _task_figures(assessed: Any) -> Any:
    """Per task definition of ``assessed`` (:func:`_assessed`): assessments, distinct tasks
    and markers, and the sum of the shares."""
    c = assessed.c
    return sa.select(
        c.task_definition_id,
        sa.func.count(),
        sa.func.count(sa.distinct(c.task_id)),
        sa.func.count(sa.distinct(c.marker_id)),
        sa.func.sum(c.share),
    ).group_by(c.task_definition_id)


def _whole_days(scope: Scope) -> tuple[date, date] | None:
    """The UTC days wholly within the scope's range, [first, end), or None if there is none
    (or the range reaches the ends of the calendar)."""
    start = scope.start.astimezone(UTC)
    first = start.date()
    try:
        if start != datetime.combine(first, datetime.min.time(), UTC):
            first += timedelta(days=1)
    except OverflowError:
        return None
    end = scope.end.astimezone(UTC).date()
    return (first, end) if first < end else None


def _tallied_tasks(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    days: tuple[date, date],
    min_minutes: int,
) -> dict[Any, tuple[int, int, int, Any]]:
    """:func:`tasks`' figures of a unit's range from its tallies (:mod:`.tallies`).

    Assessments and minutes: the whole UTC days' tallies, plus the tallied sessions of the
    partial days at the edges and every session not tallied, read as the report reads them
    (exact decimals: the sums agree to the last digit). Distinct tasks and markers: the keys
    with a tallied session in the range — those first seen before its end and last seen at
    or after its start, less those whose widest gap could straddle it and that have none in
    it, or, when no key of the unit was seen at or after its end, the unit's totals less
    those last seen before its start — plus the keys of the sessions not tallied that have
    no tallied one in it. Whole UTC months among the days come from the months' tallies."""
    first, end = days
    unit = scope.unit_id
    tally, per_month = models.AssessedDays.c, models.AssessedMonths.c
    first_at = datetime.combine(first, datetime.min.time(), UTC)
    end_at = datetime.combine(end, datetime.min.time(), UTC)
    edges = [
        Scope(low, high, unit_id=unit)
        for low, high in ((scope.start, first_at), (end_at, scope.end))
        if low < high
    ]
    c = _assessed(conn, models, scope, min_minutes, kept_within=edges).c
    # the whole months among the days from the months' tallies, the other days from theirs
    months = _whole_months(first_at, end_at) or (end, end)
    tallied = [
        sa.select(tally.definition, tally.assessments, tally.minutes).where(
            tally.unit_id == unit, tally.day >= low, tally.day < high
        )
        for low, high in ((first, months[0]), (months[1], end))
        if low < high
    ]
    if months[0] < months[1]:
        tallied.append(
            sa.select(per_month.definition, per_month.assessments, per_month.minutes).where(
                per_month.unit_id == unit,
                per_month.month >= months[0],
                per_month.month < months[1],
            )
        )
    # added up in the database: exact decimals, whatever their number of digits
    both = sa.union_all(
        *tallied,
        sa.select(
            sa.func.coalesce(c.task_definition_id, tallies.NO_DEFINITION),
            sa.literal(1, sa.BigInteger),
            c.share,
        ),
    ).subquery("both")
    b = both.c
    totals = {
        definition: (int(n), minutes)
        for definition, n, minutes in conn.execute(
            sa.select(b.definition, sa.func.sum(b.assessments), sa.func.sum(b.minutes)).group_by(
                b.definition
            )
        )
    }
    distinct = _tallied_distinct(conn, models, scope, min_minutes)
    return {
        (None if definition == tallies.NO_DEFINITION else definition): (
            n,
            distinct.get((definition, tallies.TASK), 0),
            distinct.get((definition, tallies.MARKER), 0),
            minutes,
        )
        for definition, (n, minutes) in totals.items()
        if n
    }


def _tallied_distinct(
    conn: sa.Connection, models: Models, scope: Scope, min_minutes: int
) -> dict[tuple[int, int], int]:
    """Distinct keys (:mod:`.tallies`) per (definition, kind) with a session in the scope."""
    keys, occurrences = models.AssessedKeys.c, models.Assessed.c
    start, end = scope.start, scope.end
    latest = conn.execute(
        sa.select(sa.func.max(keys.last_start)).where(keys.unit_id == scope.unit_id)
    ).scalar()

    def none_within(key: Any) -> Any:
        """SQL: ``key`` (columns unit_id, definition, kind, value) has no tallied
        occurrence in the range."""
        return ~sa.exists().where(
            occurrences.unit_id == key.unit_id,
            occurrences.definition == key.definition,
            occurrences.kind == key.kind,
            occurrences.value == key.value,
            occurrences.start_time >= start,
            occurrences.start_time < end,
        )

    spanning = sa.and_(keys.first_start < end, keys.last_start >= start)
    straddling = sa.and_(
        keys.first_start < start,
        keys.last_start >= end,
        keys.widest_gap > end - start,
        none_within(keys),
    )
    found: dict[tuple[int, int], int] = {}
    if latest is not None and latest < end:
        # no key seen at or after the end: every key but those last seen before the start
        # (none can straddle the range, none starts after it), from the unit's totals
        totals = models.AssessedTotals.c
        for definition, kind, n in conn.execute(
            sa.select(totals.definition, totals.kind, totals["keys"]).where(
                totals.unit_id == scope.unit_id
            )
        ):
            found[definition, kind] = n
        for definition, kind, n in conn.execute(
            sa.select(keys.definition, keys.kind, sa.func.count())
            .where(keys.unit_id == scope.unit_id, keys.last_start < start)
            .group_by(keys.definition, keys.kind)
        ):
            found[definition, kind] -= n
    elif latest is not None:
        for definition, kind, n in conn.execute(
            sa.select(
                keys.definition,
                keys.kind,
                sa.func.count().filter(spanning) - sa.func.count().filter(straddling),
            )
            .where(keys.unit_id == scope.unit_id)
            .group_by(keys.definition, keys.kind)
        ):
            found[definition, kind] = n
    # the keys of the sessions not tallied that no tallied session in the range has
    c = _assessed(conn, models, scope, min_minutes, kept_within=[], shares=False).c
    definition = sa.func.coalesce(c.task_definition_id, tallies.NO_DEFINITION)
    unit = sa.literal(scope.unit_id, sa.BigInteger)
    others = sa.union(
        sa.select(
            unit.label("unit_id"),
            definition.label("definition"),
            sa.literal(tallies.TASK, sa.SmallInteger).label("kind"),
            c.task_id.label("value"),
        ).where(c.task_id.is_not(None)),
        sa.select(
            unit,
            definition,
            sa.literal(tallies.MARKER, sa.SmallInteger),
            c.marker_id,
        ),
    ).subquery("others")
    o = others.c
    for definition, kind, n in conn.execute(
        sa.select(o.definition, o.kind, sa.func.count())
        .where(none_within(o))
        .group_by(o.definition, o.kind)
    ):
        found[definition, kind] = found.get((definition, kind), 0) + n
    return found


def _share(conn: sa.Connection, minutes: Any, n: Any) -> Any:
    """SQL: each of a session's ``n`` assessments' share of its ``minutes``; on PostgreSQL
    in exact decimals, divided as the tallies divide (``tallies.SHARE``): every way of
    adding them up must give the same sum to the last digit."""
    if conn.dialect.name == "postgresql":
        return sa.cast(minutes, sa.Numeric) / sa.cast(n, sa.Numeric)
    return minutes * 1.0 / n


def _assessed_tasks(conn: sa.Connection, models: Models) -> tuple[Any, Any]:
    """The assessments (session, task definition, task) to join to the range's sessions,
    and how to count each one's session's assessments.

    On PostgreSQL a LATERAL subquery per session, read from the covering
    (marking_session_id, created_at) index session by session however long the range (over
    two years a plain join made the planner scan every activity of every unit), which
    counts its session's assessments itself rather than in a window over all of them (a
    sort of every assessment of the range by session)."""
    act = models.SessionActivity
    columns = [act.marking_session_id, act.task_definition_id, act.task_id]
    ms = models.MarkingSession
    if conn.dialect.name == "postgresql":
        own = (
            sa.select(*columns, sa.func.count().over().label("n"))
            .where(act.marking_session_id == ms.id, act.action == ASSESSING)
            .offset(sa.literal_column("0"))  # kept a subquery: the planner would flatten it
            .lateral("assessed_tasks")
        )
        return own, own.c.n
    plain = sa.select(*columns).where(act.action == ASSESSING).subquery("assessed_tasks")
    return plain, sa.func.count().over(partition_by=ms.id)


def empty_buckets(starts: list[datetime], tz: ZoneInfo) -> list[dict[str, Any]]:
    """A timeline's buckets with nothing counted yet: each bucket's first day in ``tz`` and
    first instant."""
    return [
        {
            "start": s.astimezone(tz).date(),
            "start_time": s,
            "minutes": 0,
            "sessions": 0,
            "assessments": 0,
        }
        for s in starts
    ]


def timeline(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    starts: list[datetime],
    tz: ZoneInfo,
    *,
    min_minutes: int,
    timetable: Timetable | None = None,
    stored: bool = True,
) -> list[dict[str, Any]]:
    """Minutes (R10), sessions and assessments per bucket; every bucket listed, empty or not.
    With a ``timetable``, each bucket's minutes are also split by R12 (as its blocks are).
    From the stored figures, as :func:`summary` is.

    ``starts`` are the buckets' first instants in UTC (local midnights, so DST falls right).
    Sessions and assessments count in the bucket each session starts in. A tutor's
    overlapping sessions are merged over the whole range, as the summary merges them, and
    each merged block's minutes count in the bucket the block starts in: so the buckets
    always add up to the summary of the same range, and no minute counts twice.
    """
    buckets = empty_buckets(starts, tz)
    if not starts:
        return buckets
    if stored:
        figures = figured_by(
            conn,
            models,
            scope,
            min_minutes=min_minutes,
            starts=starts,
            per_marker=False,
            timetable=timetable,
        )
        for (value, _), (n_sessions, n_assessments, total, _during) in figures.items():
            buckets[value or 0].update(
                sessions=n_sessions, assessments=n_assessments, minutes=total
            )
        if timetable is not None:
            for n, b in enumerate(buckets):
                with_split(b, figures.get((n, None), [0, 0, 0, 0])[3])
        return buckets
    index = bucket_index(conn, starts)
    for i, n_sessions, n_assessments in _counts_by(
        conn, models, scope, index(models.MarkingSession.start_time)
    ):
        buckets[i]["sessions"] = n_sessions
        buckets[i]["assessments"] = int(n_assessments)
    minutes = merged_split_by(
        conn, models, scope, min_minutes=min_minutes, bucket=index, timetable=timetable
    )
    for (i, _), (total, _during) in minutes.items():
        buckets[i]["minutes"] += total
    if timetable is not None:
        during = [0] * len(buckets)
        for (i, _), (_total, d) in minutes.items():
            during[i] += d
        for b, d in zip(buckets, during, strict=True):
            with_split(b, d)
    return buckets


def bucket_index(conn: sa.Connection, starts: list[datetime]) -> Callable[[Any], Any]:
    """A start time's bucket, as SQL: the index of the last of ``starts`` at or before it.

    Both backends compare UTC instants with the same bucket starts, so they agree to the
    microsecond whatever the zone; no zone name reaches the database. PostgreSQL's
    ``width_bucket`` does it by binary search; elsewhere a CASE walks the starts. A time
    before the first start counts in the first bucket (the scope never holds one).
    """
    if len(starts) == 1:
        return lambda _: sa.literal(0)
    if conn.dialect.name == "postgresql":
        thresholds = bound_array(starts, sa.DateTime(timezone=True))
        return lambda t: sa.func.greatest(sa.func.width_bucket(t, thresholds), 1) - 1
    return lambda t: sa.case(*[(t < s, i) for i, s in enumerate(starts[1:])], else_=len(starts) - 1)
