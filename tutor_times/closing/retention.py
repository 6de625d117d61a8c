"""Removing old data: deleting closed sessions with their activities, or blanking their IP
addresses, in batches, one transaction each."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..store import figures
from ..store.models import Models
from ..store.sql import lock_keys, tutor_hash

#: what ``purge --anonymize`` leaves in place of an address
ANONYMIZED = ""


def purge(
    connect: Callable[[], sa.Connection],
    models: Models,
    *,
    before: datetime,
    anonymize: bool,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete the closed sessions that ended before ``before``, with their activities — or,
    with ``anonymize``, only blank their IP addresses. One batch per transaction; returns
    how many sessions it changed and reports each batch to ``progress``."""
    ms, act = models.MarkingSession.__table__, models.SessionActivity.__table__
    scope = _purge_scope(models, before, anonymize)
    done = 0
    while True:
        with connect() as conn:
            found = conn.execute(
                sa.select(ms.c.id, ms.c.unit_id, ms.c.marker_id)
                .where(*scope)
                .order_by(ms.c.id)
                .limit(batch_size)
            ).all()
            if not found:
                return done
            ids = [f.id for f in found]
            if anonymize:
                conn.execute(sa.update(ms).where(ms.c.id.in_(ids)).values(ip_address=ANONYMIZED))
            else:
                # their tutors' locks before any row's: deleting keeps the tutors' figures
                lock_keys(conn, [tutor_hash(f.unit_id, f.marker_id) for f in found])
                conn.execute(sa.delete(act).where(act.c.marking_session_id.in_(ids)))
                gone = conn.execute(
                    sa.delete(ms)
                    .where(ms.c.id.in_(ids))
                    .returning(ms.c.unit_id, ms.c.marker_id, ms.c.start_time, ms.c.end_time)
                )
                # the blocks the deleted sessions were in are merged again without them
                figures.refresh(conn, models, [figures.Touch(*row) for row in gone])
            conn.commit()
        done += len(ids)
        if progress is not None:
            progress(len(ids))


def purge_count(conn: sa.Connection, models: Models, *, before: datetime, anonymize: bool) -> int:
    """How many sessions :func:`purge` would change."""
    scope = _purge_scope(models, before, anonymize)
    query = sa.select(sa.func.count()).select_from(models.MarkingSession).where(*scope)
    return int(conn.execute(query).scalar_one())


def _purge_scope(models: Models, before: datetime, anonymize: bool) -> list[Any]:
    ms = models.MarkingSession
    scope = [ms.end_time.is_not(None), ms.end_time < before]
    if anonymize:
        scope.append(ms.ip_address != ANONYMIZED)
    return scope
