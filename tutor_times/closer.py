"""Closing idle sessions with exact end times (R3, R4, R6).

Three paths close a session, all through :func:`close_sessions`: the next activity of the
key (in the store), the periodic sweep here, and the Redis expiry listener (which only
makes closing sooner). SQL is the source of truth; closing is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .accounting import duration_minutes
from .models import Models

logger = logging.getLogger("tutor_times")

#: (session id, start_time, time of its last activity)
IdleSession = tuple[int, datetime, datetime]


def close_sessions(
    conn: sa.Connection,
    models: Models,
    idle: Iterable[IdleSession],
    min_minutes: int,
    now: datetime,
) -> int:
    """Close each session at its last activity; returns how many were still open."""
    table = models.MarkingSession.__table__
    params = [
        {
            "b_id": sid,
            "b_end": last,
            "b_duration": duration_minutes(start, last, min_minutes),
            "b_now": now,
        }
        for sid, start, last in idle
    ]
    if not params:
        return 0
    stmt = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("b_id"), table.c.end_time.is_(None))
        .values(
            end_time=sa.bindparam("b_end", type_=table.c.end_time.type),
            duration_minutes=sa.bindparam("b_duration"),
            updated_at=sa.bindparam("b_now", type_=table.c.updated_at.type),
        )
    )
    result = conn.execute(stmt, params)
    return int(result.rowcount)


def last_activity_of(models: Models) -> Any:
    """A correlated scalar: the created_at of a session's last activity."""
    ms, act = models.MarkingSession, models.SessionActivity
    return (
        sa.select(sa.func.max(act.created_at))
        .where(act.marking_session_id == ms.id)
        .scalar_subquery()
    )


def sweep(
    connect: Callable[[], sa.Connection],
    models: Models,
    *,
    now: datetime,
    timeout: timedelta,
    min_minutes: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Close every session idle for ``timeout`` at ``now``, one batch per transaction.

    Safe with several sweepers at once: each locks its batch with SKIP LOCKED, and a
    session locked by an activity being written is, by definition, not idle. The last
    activity is read after the lock is held, so an activity committed meanwhile counts.
    """
    ms, act = models.MarkingSession, models.SessionActivity
    cutoff = now - timeout
    last = last_activity_of(models)
    recent = sa.exists().where(act.marking_session_id == ms.id, act.created_at > cutoff)
    closed = 0
    after_id = 0
    while True:
        with connect() as s:
            ids = s.scalars(
                sa.select(ms.id)
                .where(ms.end_time.is_(None), ms.id > after_id, ~recent)
                .order_by(ms.id)
                .limit(batch_size)
                .with_for_update(of=ms, skip_locked=True)
            ).all()
            if not ids:
                break
            after_id = ids[-1]
            rows = s.execute(
                sa.select(ms.id, ms.start_time, last.label("last")).where(ms.id.in_(ids))
            ).all()
            idle = [
                (r.id, r.start_time, r.last or r.start_time)
                for r in rows
                if (r.last or r.start_time) <= cutoff
            ]
            n = close_sessions(s, models, idle, min_minutes, now)
            s.commit()
        closed += n
        if n:
            logger.info("closed %d idle marking sessions", n)
            if on_batch is not None:
                on_batch(n)
        if len(ids) < batch_size:
            break
    return closed
