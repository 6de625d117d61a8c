"""The worker's recurring jobs, one row each in SQL: its heartbeat, and leases.

The heartbeat lives in SQL, not Redis, so that ``/health`` can tell how long ago a worker
last finished a pass even while Redis is down. A lease is the same row used as a mutex
across processes and machines: one conditional UPDATE either moves its time forward (the
caller won and runs the job) or changes nothing (the job ran recently, or runs now).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..core.accounting import UTC

HEARTBEAT = "worker-heartbeat"
RETENTION = "retention"
#: the time of a lease that never ran: long enough ago for any interval
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def holder() -> str:
    """Who holds a lease or beat last: for a person reading the table."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def _insert_once(conn: sa.Connection, table: sa.Table, name: str, ran_at: datetime) -> bool:
    """Insert the job's row in a transaction of its own; False if it exists already."""
    try:
        conn.execute(sa.insert(table).values(name=name, ran_at=ran_at, holder=holder()))
        conn.commit()
        return True
    except IntegrityError:
        conn.rollback()
        return False


def beat(conn: sa.Connection, table: sa.Table, *, now: datetime, name: str = HEARTBEAT) -> None:
    """Record that the worker finished a pass at ``now``."""
    update = sa.update(table).where(table.c.name == name).values(ran_at=now, holder=holder())
    updated = conn.execute(update)
    conn.commit()
    if not updated.rowcount and not _insert_once(conn, table, name, now):
        conn.execute(update)  # another worker inserted the row first
        conn.commit()


def last_beat(conn: sa.Connection, table: sa.Table, name: str = HEARTBEAT) -> datetime | None:
    value: datetime | None = conn.scalar(sa.select(table.c.ran_at).where(table.c.name == name))
    return value


def take_lease(
    conn: sa.Connection, table: sa.Table, name: str, *, now: datetime, every: timedelta
) -> bool:
    """True when the job ``name`` last started ``every`` or more before ``now``, and this
    caller is the one that moved its time to ``now``: then it runs the job. Safe with any
    number of callers at once, since only one UPDATE can match the old time."""
    _insert_once(conn, table, name, NEVER)
    won = conn.execute(
        sa.update(table)
        .where(table.c.name == name, table.c.ran_at <= now - every)
        .values(ran_at=now, holder=holder())
    )
    conn.commit()
    return bool(won.rowcount)
