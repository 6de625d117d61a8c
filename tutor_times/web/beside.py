"""Reports a page runs beside its own, on PostgreSQL: a second connection, the same snapshot.

A page of several reports (the dashboard) spends most of its time waiting for PostgreSQL,
one statement after another on one connection. Those it can run beside the rest go to a
second connection of the reports' pool, in a thread of their own, one after another there:
while the page's own connection reads the summary, the second reads the tasks report. Both
read one snapshot — the page's connection exports its snapshot and the second imports it
before its first statement — so the page's numbers agree with each other as they do when
read on one connection.

A page takes the second connection only when one is idle in the pool or the pool may open
another, and otherwise reads every report on its own connection, as it would without this
module: a pool that is all taken does not make the page queue for a second one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import sqlalchemy as sa

T = TypeVar("T")

#: what ``pg_export_snapshot()`` returns (hexadecimal parts), checked before it is written
#: into ``SET TRANSACTION SNAPSHOT``, which takes no parameters
SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(?:-[0-9A-Fa-f]+)+")


class Beside:
    """A second connection, ``conn``, reading the page's snapshot: the reports given to
    :meth:`run` run on it in a thread of their own, one after another."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tutor-times-beside")

    @classmethod
    def of(cls, page: sa.Connection, engine: sa.Engine) -> Beside | None:
        """A second connection of ``engine`` reading the snapshot of ``page`` (one of its
        connections, in a REPEATABLE READ transaction), taken here; or None: not
        PostgreSQL, or no connection idle in the pool nor room to open one."""
        if page.dialect.name != "postgresql" or not _spare(engine.pool):
            return None
        snapshot = page.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
        conn = engine.connect()
        try:
            read_snapshot(conn, snapshot)
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def run(self, query: Callable[[sa.Connection], T]) -> Callable[[], T]:
        """Start ``query(connection)`` on the second connection, after those started
        before; returns what waits for its result (or raises its error)."""
        future: Future[T] = self.worker.submit(query, self.conn)
        return future.result

    def close(self) -> None:
        """Wait for the reports started, then give the connection back to its pool with
        its transaction ended: committed, so that it keeps its prepared statements as the
        page's does (rolled back after a report that failed: its error was raised where
        its result was asked for)."""
        try:
            self.worker.shutdown(wait=True)
        finally:
            try:
                self.conn.commit()
            except sa.exc.SQLAlchemyError:
                # a report failed on it, or the database dropped it (then SQLAlchemy asks
                # for this rollback before the connection goes back to its pool)
                self.conn.rollback()
            finally:
                self.conn.close()


def read_snapshot(conn: sa.Connection, snapshot: str) -> None:
    """Make ``conn`` read ``snapshot`` (what ``pg_export_snapshot()`` returned): the first
    statement of its transaction. The id is checked before it is written into the
    statement, which takes no parameters."""
    if not SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError(f"not a snapshot id: {snapshot!r}")
    conn.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))


def _spare(pool: sa.Pool) -> bool:
    """Whether ``pool`` has a connection for the taking now: one idle in it, or room to open
    another (the reports' pools may open as many again as their size). Another reader may
    take it first; the page then waits for the next one returned, as any report would."""
    if not isinstance(pool, sa.QueuePool):
        return False
    return pool.checkedin() > 0 or pool.overflow() < pool.size()
