"""Reports a page runs beside its own, on PostgreSQL: a second connection, the same snapshot.

A page of several reports (the dashboard) spends most of its time waiting for PostgreSQL,
one statement after another on one connection. Those it can run beside the rest go to a
second connection of the reports' pool, in a thread of their own, one after another there:
while the page's own connection reads the summary, the second reads the tasks report. Both
read one snapshot — the page's connection exports its snapshot and the second imports it
before its first statement — so the page's numbers agree with each other as they do when
read on one connection.

Nothing here waits for the pool: a page takes the second connection only when one is idle
in the pool or the pool may open another, and otherwise runs every report on its own
connection, as it would without this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa

T = TypeVar("T")

#: what ``pg_export_snapshot()`` returns (hexadecimal parts), checked before it is written
#: into ``SET TRANSACTION SNAPSHOT``, which takes no parameters
SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(?:-[0-9A-Fa-f]+)+")


class Beside:
    """A second connection reading ``snapshot`` (``pg_export_snapshot()`` of the page's
    connection), opened on ``engine`` by the first report given to :meth:`run`."""

    def __init__(self, engine: sa.Engine, snapshot: str) -> None:
        if not SNAPSHOT_ID.fullmatch(snapshot):
            raise ValueError(f"not a snapshot id: {snapshot!r}")
        self.engine = engine
        self.snapshot = snapshot
        self.conn: sa.Connection | None = None
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tutor-times-beside")

    @classmethod
    def of(cls, conn: sa.Connection, engine: sa.Engine) -> Beside | None:
        """A second connection beside ``conn`` (a connection of ``engine``'s, in a
        REPEATABLE READ transaction), or None: not PostgreSQL, or no connection to be had
        from the pool without waiting."""
        if conn.dialect.name != "postgresql" or not _spare(engine.pool):
            return None
        snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
        return cls(engine, snapshot)

    def run(self, query: Callable[..., T], *args: Any, **kwargs: Any) -> Callable[[], T]:
        """Start ``query(connection, *args, **kwargs)`` on the second connection, after
        those started before; returns what waits for its result (or raises its error)."""
        future: Future[T] = self.worker.submit(self._call, query, args, kwargs)
        return future.result

    def _call(self, query: Callable[..., T], args: Any, kwargs: Any) -> T:
        if self.conn is None:
            self.conn = self.engine.connect()
            # the first statement of its transaction: it reads the page's snapshot
            self.conn.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{self.snapshot}'"))
        return query(self.conn, *args, **kwargs)

    def close(self) -> None:
        """Wait for the reports started, and give the connection back to its pool with its
        transaction committed (so it keeps its prepared statements, as the page's does)."""
        self.worker.submit(self._release).result()
        self.worker.shutdown(wait=True)

    def _release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.commit()
        finally:
            conn.close()


def _spare(pool: sa.Pool) -> bool:
    """Whether ``pool`` has a connection for the taking now: one idle in it, or room to open
    another (the reports' pools may open as many again as their size)."""
    if not isinstance(pool, sa.QueuePool):
        return False
    return pool.checkedin() > 0 or pool.overflow() < pool.size()
