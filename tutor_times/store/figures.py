"""Figures kept on each closed session, so a report over years adds them up.

A report over a long range used to count every session's assessments from its activities
and merge R10 over every session, on every request. Those figures change only when a
session does, so each closed session keeps them (open ones keep NULLs and are counted live):

- ``assessments``: its assessing activities, and ``assessed_definitions`` and
  ``assessed_tasks``: the task definition and the task of each of them, in order;
- ``block_start``, ``block_last_start``, ``block_end``: the R10 block it belongs to when
  *all* of its tutor's closed sessions in the unit are merged — the block's first start,
  its last session's start, and its end;
- ``block_minutes``: the block's whole minutes, ⌊(end − first start) / 1 minute⌋, on the
  block's first session (by start, end, id) and NULL on the others. R4's minimum is applied
  when read, so a changed MIN_MINUTES needs nothing rewritten.

A block whose sessions all start in a report's range is the block the range's own merge
makes (merging is a walk in start order, and nothing outside the block touches it), so the
report takes its stored minutes. The few blocks cut by the range's edges, or near an open
session, are merged again from their sessions by the report (:mod:`tutor_times.reports`).

Every writer that closes, reopens, moves, joins or deletes a session, or adds an activity to
a closed one, calls :func:`refresh` (or :func:`sessions_changed`) in its own transaction with
the tutor, unit and earliest time it touched. The blocks that reach that time or later are
merged again from their sessions: a session closing at the end of its tutor's history
rewrites only itself.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from operator import attrgetter
from typing import Any, NamedTuple

import sqlalchemy as sa

from ..core.accounting import duration_minutes, overlapping
from ..core.constants import ASSESSING
from .models import Models
from .sql import activities_of, bound_array, lock_keys, tutor_hash, update_rows

#: the columns this module keeps, in the order :func:`_figures` gives them
FIGURES = (
    "assessments",
    "block_start",
    "block_last_start",
    "block_end",
    "block_minutes",
    "assessed_definitions",
    "assessed_tasks",
)
#: what a session's assessing activities give it: its count and its two lists
COUNTED = ("assessments", "assessed_definitions", "assessed_tasks")

#: keys per statement when SQLite reads many tutors' sessions (one OR term per tutor)
SQLITE_TUTORS_PER_READ = 200


class Touch(NamedTuple):
    """A write to one tutor's sessions in one unit within [since, until]: from the earliest
    start it gave, took away or changed to the latest end (or block end) it did."""

    unit_id: int
    marker_id: int
    since: datetime
    until: datetime


def sessions_changed(conn: sa.Connection, models: Models, ids: Iterable[int]) -> None:
    """:func:`refresh` for the sessions ``ids`` as they are now (closed, reopened, or given
    another activity); ids that no longer exist are skipped."""
    ids = sorted(set(ids))
    if not ids:
        return
    refresh(conn, models, touched(conn, models, ids), recount=ids)


def touched(conn: sa.Connection, models: Models, ids: list[int]) -> list[Touch]:
    """What the stored sessions ``ids`` reach as they are now: each one's start to its end,
    or to its block's end (a reopened one, whose figures are set to NULLs here)."""
    if not ids:
        return []
    ms = models.MarkingSession
    rows = conn.execute(
        sa.select(
            ms.id,
            ms.unit_id,
            ms.marker_id,
            ms.start_time,
            ms.end_time,
            ms.block_start,
            ms.block_end,
        ).where(ms.id.in_(ids))
    ).all()
    reopened = [r.id for r in rows if r.end_time is None and r.block_start is not None]
    if reopened:
        conn.execute(
            sa.update(ms.__table__).where(ms.id.in_(reopened)).values(dict.fromkeys(FIGURES))
        )
    # a session reaches as far as its end, or as its block did (a reopened one)
    return [
        Touch(
            r.unit_id,
            r.marker_id,
            r.start_time,
            max(t for t in (r.start_time, r.end_time, r.block_end) if t is not None),
        )
        for r in rows
    ]


class Made(NamedTuple):
    """A session a writer creates, whose figures are worked out before it is written (or
    while it is stored without them), from what the writer holds: its activities' count and
    lists (:data:`COUNTED`), in the order they are stored. ``id`` is the one it is stored
    under: a block's sessions are ordered by it after their start and end."""

    id: int
    unit_id: int
    marker_id: int
    start_time: datetime
    #: None for an open session (it has no figures, and reaches only its start)
    end_time: datetime | None
    counted: tuple[Any, ...]


def refresh(
    conn: sa.Connection,
    models: Models,
    touches: Iterable[Touch],
    *,
    recount: Iterable[int] = (),
) -> None:
    """Keep the figures of every tutor touched: merge again the closed sessions of the
    blocks that reach into each touch's times (a later block cannot change: nothing before
    it moved). A session's assessments are counted again when it is in ``recount`` (its
    activities changed) or has none stored.

    One transaction at a time merges a tutor's blocks: it holds the tutor's lock
    (:func:`~tutor_times.store.models.tutor_hash`) to its end. Writers take it with their keys'
    locks, before locking any session; taking it again here costs nothing."""
    changed, _ = merged(conn, models, touches, recount=recount)
    write_changed(conn, models, changed)


def write_changed(conn: sa.Connection, models: Models, changed: list[tuple[Any, ...]]) -> None:
    """The rows :func:`merged` found changed, (id, *figures) each, written: one UPDATE over
    arrays on PostgreSQL (a statement a row was most of a sweep's time)."""
    update_rows(conn, models.MarkingSession.__table__, list(FIGURES), changed)


def merged(
    conn: sa.Connection,
    models: Models,
    touches: Iterable[Touch],
    *,
    recount: Iterable[int] = (),
    made: Iterable[Made] = (),
) -> tuple[list[tuple[Any, ...]], dict[int, tuple[Any, ...]]]:
    """:func:`refresh`'s work without its write: the stored sessions whose figures change,
    (id, *figures) each, and the figures of each of ``made`` (NULLs for an open one), which
    are merged into their tutors' blocks with the stored sessions, as they would be once
    stored. A made session may already be stored without figures: it is then read as made.
    Each made session touches its tutor from its start to its end."""
    made = list(made)
    touches = [
        *touches,
        *(Touch(m.unit_id, m.marker_id, m.start_time, m.end_time or m.start_time) for m in made),
    ]
    found: dict[int, tuple[Any, ...]] = {m.id: NO_FIGURES for m in made}
    spans: dict[tuple[int, int], tuple[datetime, datetime]] = {}
    for unit_id, marker_id, since, until in touches:
        tutor = (unit_id, marker_id)
        lo, hi = spans.get(tutor, (since, until))
        spans[tutor] = (min(lo, since), max(hi, until))
    if not spans:
        return [], found
    lock_keys(conn, [tutor_hash(unit_id, marker_id) for unit_id, marker_id in spans])
    rows, counted = _sessions_within(conn, models, spans, set(recount), set(found))
    closed_made = [m for m in made if m.end_time is not None]
    counted.update((m.id, m.counted) for m in closed_made)
    by_tutor: dict[tuple[int, int], list[Any]] = {}
    for row in (*rows, *closed_made):
        by_tutor.setdefault((row.unit_id, row.marker_id), []).append(row)
    changed: list[tuple[Any, ...]] = []
    for sessions in by_tutor.values():
        if closed_made:  # the stored ones came in this order; the made ones join them
            sessions.sort(key=attrgetter("start_time", "end_time", "id"))
        for row, figures in zip(sessions, _figures(sessions, counted), strict=True):
            if isinstance(row, Made):
                found[row.id] = figures
            elif tuple(getattr(row, name) for name in FIGURES) != figures:
                changed.append((row.id, *figures))
    return changed, found


#: an open session's figures
NO_FIGURES = (None,) * len(FIGURES)


def refresh_all(conn: sa.Connection, models: Models) -> None:
    """Every tutor's figures from the first session on, counted and merged again (a bulk
    load, or a check)."""
    ms = models.MarkingSession
    tutors = conn.execute(
        sa.select(ms.unit_id, ms.marker_id, sa.func.min(ms.start_time), sa.func.max(ms.end_time))
        .where(ms.end_time.is_not(None))
        .group_by(ms.unit_id, ms.marker_id)
    ).all()
    conn.execute(sa.update(ms.__table__).values(dict.fromkeys(COUNTED)))  # all counted again
    # a unit at a time: the sessions of one unit, and their assessments, held at once
    by_unit: dict[int, list[Touch]] = {}
    for t in tutors:
        by_unit.setdefault(t[0], []).append(Touch(*t))
    for touches in by_unit.values():
        refresh(conn, models, touches)


def _figures(sessions: list[Any], counted: dict[int, tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The figures of one tutor's closed sessions in start order (the first of them starts
    a block), block by block of R10's walk, with what ``counted`` gives each."""
    out = []
    for block in overlapping(sessions, attrgetter("start_time"), attrgetter("end_time")):
        first, last = block[0].start_time, block[-1].start_time
        end = max(s.end_time for s in block)
        minutes = duration_minutes(first, end, 0)
        out += [
            (counted[s.id][0], first, last, end, minutes if n == 0 else None, *counted[s.id][1:])
            for n, s in enumerate(block)
        ]
    return out


def _sessions_within(
    conn: sa.Connection,
    models: Models,
    spans: dict[tuple[int, int], tuple[datetime, datetime]],
    recount: set[int],
    leave_out: Collection[int] = (),
) -> tuple[list[Any], dict[int, tuple[Any, ...]]]:
    """The closed sessions of the blocks that reach into each tutor's [since, until], in
    start order, but those in ``leave_out``, and their (assessments, definitions, tasks) by
    id: counted for those in ``recount`` or with none stored, else as stored
    (:func:`_counted`).

    Blocks are disjoint and ordered, so those are the blocks whose stored end lies from
    ``since`` up to the end of the first block ending at or after ``until`` (a bounded
    range of the tutor's ``block_end`` index, however long the history after it), and the
    sessions with no figures yet that start within the span."""
    ms = models.MarkingSession
    columns = [
        ms.id,
        ms.unit_id,
        ms.marker_id,
        ms.start_time,
        ms.end_time,
        *(getattr(ms, name) for name in FIGURES),
    ]
    order = [ms.unit_id, ms.marker_id, ms.start_time, ms.end_time, ms.id]
    closed = ms.end_time.is_not(None)
    reach = _reach(ms)

    rows: list[Any]
    if conn.dialect.name == "postgresql":
        rows = _within_each_tutor(conn, ms, spans, columns, closed, reach)
    else:
        rows = []
        items = sorted(spans.items())
        for i in range(0, len(items), SQLITE_TUTORS_PER_READ):
            within = [
                reach(unit_id, marker_id, since, until)
                for (unit_id, marker_id), (since, until) in items[i : i + SQLITE_TUTORS_PER_READ]
            ]
            rows += conn.execute(
                sa.select(*columns).where(closed, sa.or_(*within)).order_by(*order)
            )
    if leave_out:
        rows = [r for r in rows if r.id not in leave_out]
    return rows, _counted(conn, models, rows, recount)


def _reach(ms: Any) -> Callable[[Any, Any, Any, Any], Any]:
    """SQL: the sessions of a tutor's blocks that reach into [since, until] (see
    :func:`_sessions_within`), for a tutor's columns or values."""
    later = ms.__table__.alias("later").c

    def reach(unit_id: Any, marker_id: Any, since: Any, until: Any) -> Any:
        first_after = (
            sa.select(sa.func.min(later.block_end))
            .where(
                later.unit_id == unit_id,
                later.marker_id == marker_id,
                later.block_end >= until,
            )
            .correlate_except(later.block_end.table)
            .scalar_subquery()
        )
        bound = sa.func.coalesce(first_after, until, type_=ms.block_end.type)
        return sa.and_(
            ms.unit_id == unit_id,
            ms.marker_id == marker_id,
            sa.or_(
                sa.and_(ms.block_end >= since, ms.block_end <= bound),
                # by the index of sessions without figures (the open ones too), by start:
                # the tutor's block_end index would list every open session of theirs
                sa.and_(ms.block_start.is_(None), ms.start_time >= since, ms.start_time <= until),
            ),
        )

    return reach


def _within_each_tutor(
    conn: sa.Connection,
    ms: Any,
    spans: dict[tuple[int, int], tuple[datetime, datetime]],
    columns: list[Any],
    closed: Any,
    reach: Callable[[Any, Any, Any, Any], Any],
) -> list[Any]:
    """:func:`_sessions_within`'s rows on PostgreSQL: one statement, each tutor's span
    read by its own index ranges."""
    tutors = sorted(spans)
    touched = (
        sa.func.unnest(
            bound_array([u for u, _ in tutors], sa.BigInteger),
            bound_array([m for _, m in tutors], sa.BigInteger),
            bound_array([spans[t][0] for t in tutors], ms.start_time.type),
            bound_array([spans[t][1] for t in tutors], ms.start_time.type),
        )
        .table_valued("unit_id", "marker_id", "since", "until")
        .render_derived(name="touched")
    )
    t = touched.c
    # per touched tutor (LATERAL): its own index ranges, whatever the planner guesses
    # of the join (it scanned every session and ran the bound for each)
    each = (
        sa.select(*columns)
        .where(closed, reach(t.unit_id, t.marker_id, t.since, t.until))
        .correlate(touched)
        .offset(0)  # fenced: flattened, the LATERAL became a hash join over every session
    )
    found = each.lateral("found")
    f = found.c
    query = (
        sa.select(found)
        .select_from(touched)
        .join(found, sa.true())
        .order_by(f.unit_id, f.marker_id, f.start_time, f.end_time, f.id)
    )
    return list(conn.execute(query))


def _lists_agree(row: Any) -> bool:
    """Whether a closed session's stored lists can be read: they are there and as long as
    its stored assessments, both of them (a writer of an earlier version may have changed
    one and not the other). The same rule as SQL is :func:`.tallies.kept`."""
    n = row.assessments
    lists = (row.assessed_definitions, row.assessed_tasks)
    return n is not None and all(each is not None and len(each) == n for each in lists)


def _counted(
    conn: sa.Connection, models: Models, rows: list[Any], recount: set[int]
) -> dict[int, tuple[Any, ...]]:
    """Each of ``rows``' (assessments, definitions, tasks): from its activities for those in
    ``recount`` or with nothing stored (or lists a writer of an earlier version left unset
    or short), in one read; else as stored."""
    stale = [r.id for r in rows if r.id in recount or not _lists_agree(r)]
    act = models.SessionActivity
    columns = (act.marking_session_id, act.created_at, act.id, act.task_definition_id, act.task_id)
    found: dict[int, tuple[list[Any], list[Any]]] = {sid: ([], []) for sid in stale}
    # in the order they came, session by session
    for sid, _, _, definition, task in sorted(
        activities_of(conn, models, stale, columns, act.action == ASSESSING),
        key=lambda a: (a[0], a[1], a[2]),
    ):
        found[sid][0].append(definition)
        found[sid][1].append(task)
    return {
        r.id: (
            (len(found[r.id][0]), *found[r.id])
            if r.id in found
            else (r.assessments, r.assessed_definitions, r.assessed_tasks)
        )
        for r in rows
    }
