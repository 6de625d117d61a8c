"""Figures stored for reports, kept equal to what the raw activities give.

Two things are stored, both only for closed sessions (an open one is counted live):

- ``marking_sessions.assessments``: the session's assessing activities.
- ``tutor_times_blocks``: R10 over *all* of a tutor's closed sessions in a unit — each merged
  block's first start, last session start and end. A report over a range takes every block
  whose sessions all start in the range as stored; the few blocks cut by the range's edges
  or touched by an open session are merged again from their sessions (reports.py).

Every writer that closes, reopens, moves, joins, deletes a session or adds an activity to a
closed one calls :func:`changed` with the tutor and times it touched, in its transaction:
the sessions and blocks around those times are counted and merged again. :func:`rebuild_all`
recomputes everything in one statement each (a bulk load, or a check).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa

from .constants import ASSESSING
from .models import Models


class Span(NamedTuple):
    """Times [lo, hi] of one tutor's sessions in one unit that a write touched: old and new
    spans alike (a moved session's old place, too)."""

    unit_id: int
    marker_id: int
    lo: datetime
    hi: datetime


class Block(NamedTuple):
    first_start: datetime
    last_start: datetime
    end_time: datetime


def changed(conn: sa.Connection, models: Models, spans: Iterable[Span]) -> None:
    """Merge again the blocks of each span's tutor around its times.

    A tutor's blocks are merged by one transaction at a time (a lock per tutor and unit,
    taken in order, held to the end of the transaction); they read other keys' sessions
    without locking them, so no writer waits for another's rows here."""
    for span in _joined(spans):
        _lock_tutor(conn, span.unit_id, span.marker_id)
        _refresh(conn, models, span)


def sessions_changed(conn: sa.Connection, models: Models, ids: Iterable[int]) -> None:
    """Count the assessments of the sessions ``ids`` (NULL for an open one), which the
    caller has locked, and :func:`changed` for them as they are now (from start to end,
    or to the last activity of an open one). Sessions that no longer exist are skipped."""
    ids = sorted(ids)
    if not ids:
        return
    ms, act = models.MarkingSession, models.SessionActivity
    counted = sa.case((ms.end_time.is_(None), sa.null()), else_=_assessments_of(models))
    conn.execute(sa.update(ms.__table__).where(ms.id.in_(ids)).values(assessments=counted))
    last = sa.select(sa.func.max(act.created_at)).where(act.marking_session_id == ms.id)
    hi = sa.func.coalesce(
        ms.end_time, last.scalar_subquery(), ms.start_time, type_=ms.start_time.type
    )
    rows = conn.execute(
        sa.select(ms.unit_id, ms.marker_id, ms.start_time, hi.label("hi")).where(ms.id.in_(ids))
    ).all()
    changed(conn, models, [Span(r.unit_id, r.marker_id, r.start_time, r.hi) for r in rows])


def keys_changed(
    conn: sa.Connection, models: Models, keys: Iterable[tuple[int, int, str]], since: datetime
) -> None:
    """:func:`sessions_changed` for the sessions of ``keys`` (marker, unit, ip) written at or
    after ``since`` (their ``updated_at``): what a writer that stamps every session it
    touches has changed. A session it deleted lay within one it kept."""
    ms = models.MarkingSession
    ids: list[int] = []
    for marker, unit, ip in keys:
        ids += conn.scalars(
            sa.select(ms.id).where(
                ms.marker_id == marker,
                ms.unit_id == unit,
                ms.ip_address == ip,
                ms.updated_at >= since,
            )
        ).all()
    sessions_changed(conn, models, ids)


def rebuild_all(conn: sa.Connection, models: Models) -> None:
    """Count every closed session's assessments and merge every block again, in SQL."""
    ms = models.MarkingSession
    conn.execute(sa.delete(models.Blocks))
    conn.execute(
        sa.update(ms.__table__)
        .where(ms.end_time.is_not(None))
        .values(assessments=_assessments_of(models))
    )
    conn.execute(_merge_all(conn, models))


def before(t: datetime, reach: timedelta) -> datetime:
    """``t − reach``, or the first instant there is when that is before it."""
    try:
        return t - reach
    except OverflowError:
        return datetime.min.replace(tzinfo=t.tzinfo)


def max_reach(conn: sa.Connection, models: Models) -> timedelta:
    """How far before an instant any stored block touching it can start."""
    seconds = conn.execute(sa.select(sa.func.max(models.Blocks.c.reach_seconds))).scalar()
    return timedelta(seconds=int(seconds or 0))


def merge(spans: Iterable[tuple[datetime, datetime]]) -> list[Block]:
    """R10: (start, end) spans that overlap or touch merged, in (start, end) order."""
    blocks: list[Block] = []
    for start, end in sorted(spans):
        if blocks and start <= blocks[-1].end_time:
            first, _, last = blocks[-1]
            blocks[-1] = Block(first, start, max(last, end))
        else:
            blocks.append(Block(start, start, end))
    return blocks


def _joined(spans: Iterable[Span]) -> list[Span]:
    """One span per tutor where a write's spans overlap, so each is merged once."""
    out: list[Span] = []
    for span in sorted(spans):
        if out and out[-1][:2] == span[:2] and span.lo <= out[-1].hi:
            out[-1] = out[-1]._replace(hi=max(out[-1].hi, span.hi))
        else:
            out.append(span)
    return out


def _lock_tutor(conn: sa.Connection, unit_id: int, marker_id: int) -> None:
    if conn.dialect.name == "postgresql":  # SQLite runs one writer at a time already
        text = f"blocks:{unit_id}:{marker_id}".encode()
        key = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def _refresh(conn: sa.Connection, models: Models, span: Span) -> None:
    reach = max_reach(conn, models)
    span = _widened(conn, models, span, reach)
    blocks, ms = models.Blocks, models.MarkingSession
    conn.execute(sa.delete(blocks).where(*_blocks_touching(models, span, reach)))
    rows = conn.execute(
        sa.select(ms.start_time, ms.end_time).where(*_closed_touching(models, span))
    ).all()
    merged = merge((r.start_time, r.end_time) for r in rows)
    if merged:
        conn.execute(
            sa.insert(blocks),
            [
                {
                    "unit_id": span.unit_id,
                    "marker_id": span.marker_id,
                    **b._asdict(),
                    "reach_seconds": math.ceil((b.end_time - b.first_start).total_seconds()),
                }
                for b in merged
            ],
        )


def _widened(conn: sa.Connection, models: Models, span: Span, reach: timedelta) -> Span:
    """The span grown until no stored block or closed session crosses its edges."""
    blocks, ms = models.Blocks.c, models.MarkingSession
    while True:
        found = [
            conn.execute(
                sa.select(sa.func.min(blocks.first_start), sa.func.max(blocks.end_time)).where(
                    *_blocks_touching(models, span, reach)
                )
            ).one(),
            conn.execute(
                sa.select(sa.func.min(ms.start_time), sa.func.max(ms.end_time)).where(
                    *_closed_touching(models, span)
                )
            ).one(),
        ]
        lo = min([span.lo, *(f[0] for f in found if f[0] is not None)])
        hi = max([span.hi, *(f[1] for f in found if f[1] is not None)])
        if (lo, hi) == (span.lo, span.hi):
            return span
        span = span._replace(lo=lo, hi=hi)


def _blocks_touching(models: Models, span: Span, reach: timedelta) -> list[Any]:
    b = models.Blocks.c
    return [
        b.unit_id == span.unit_id,
        b.marker_id == span.marker_id,
        b.first_start >= before(span.lo, reach),
        b.first_start <= span.hi,
        b.end_time >= span.lo,
    ]


def _closed_touching(models: Models, span: Span) -> list[Any]:
    ms = models.MarkingSession
    return [
        ms.unit_id == span.unit_id,
        ms.marker_id == span.marker_id,
        ms.end_time.is_not(None),
        ms.start_time <= span.hi,
        ms.end_time >= span.lo,
    ]


def _assessments_of(models: Models) -> Any:
    ms, act = models.MarkingSession, models.SessionActivity
    return (
        sa.select(sa.func.count())
        .where(act.marking_session_id == ms.id, act.action == ASSESSING)
        .scalar_subquery()
    )


def _merge_all(conn: sa.Connection, models: Models) -> Any:
    """INSERT … SELECT of every closed session's block: gaps and islands per tutor."""
    ms, blocks = models.MarkingSession, models.Blocks
    tutor = [ms.unit_id, ms.marker_id]
    order = [ms.start_time, ms.end_time, ms.id]
    ended_before = sa.func.max(ms.end_time).over(
        partition_by=tutor, order_by=order, rows=(None, -1)
    )
    flagged = (
        sa.select(
            *tutor,
            ms.start_time,
            ms.end_time,
            ms.id,
            sa.case((ms.start_time <= ended_before, 0), else_=1).label("starts"),
        )
        .where(ms.end_time.is_not(None))
        .subquery("flagged")
    )
    f = flagged.c
    numbered = sa.select(
        f.unit_id,
        f.marker_id,
        f.start_time,
        f.end_time,
        sa.func.sum(f.starts)
        .over(
            partition_by=[f.unit_id, f.marker_id],
            order_by=[f.start_time, f.end_time, f.id],
            rows=(None, 0),
        )
        .label("block"),
    ).subquery("numbered")
    n = numbered.c
    first, end = sa.func.min(n.start_time), sa.func.max(n.end_time)
    if conn.dialect.name == "postgresql":
        reach: Any = sa.cast(sa.func.ceil(sa.extract("epoch", end - first)), sa.BigInteger)
    else:
        reach = sa.cast(
            (sa.func.julianday(end) - sa.func.julianday(first)) * 86400 + 1, sa.BigInteger
        )
    select = sa.select(
        n.unit_id, n.marker_id, first, sa.func.max(n.start_time), end, reach
    ).group_by(n.unit_id, n.marker_id, n.block)
    c = blocks.c
    return sa.insert(blocks).from_select(
        [c.unit_id, c.marker_id, c.first_start, c.last_start, c.end_time, c.reach_seconds], select
    )
