"""Session stores: where the open session of a key is found.

``SqlStore`` is the original design's algorithm and the source of truth. ``RedisStore``
caches each key's open session so that the common case, a session that already exists,
costs one Redis round trip before the single INSERT.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached

from .accounting import continues, to_micros
from .closer import close_sessions, last_activity_of
from .constants import REDIS_CLIENT_DEFAULTS
from .models import Models, UTCDateTime

logger = logging.getLogger("tutor_times")


@dataclass(frozen=True)
class Activity:
    """A validated activity, ready to be stored."""

    action: str
    marker_id: int
    unit_id: int
    ip_address: str
    project_id: int | None
    task_id: int | None
    task_definition_id: int | None
    at: datetime


@dataclass(frozen=True)
class Recorded:
    activity: Any  # the stored SessionActivity
    session_id: int
    last_activity: datetime  # the session's last activity after this one


ACTIVITY_COLUMNS = ("action", "project_id", "task_id", "task_definition_id")


class SqlStore:
    """Find-or-create in SQL: the original design's algorithm (R1-R5)."""

    #: attempts when a concurrent request created the key's session first (R5)
    attempts = 5

    def __init__(
        self,
        models: Models,
        engine: Callable[[], sa.Engine],
        *,
        timeout: timedelta,
        min_minutes: int,
    ) -> None:
        self.models = models
        self.engine = engine
        self.timeout = timeout
        self.min_minutes = min_minutes
        #: (engine, the same engine in autocommit mode), made once per engine
        self._autocommit: tuple[sa.Engine, sa.Engine] | None = None
        #: the append statement's SQL text, by dialect (see _append)
        self._driver_sql: dict[str, str] = {}
        self._activity_class = models.SessionActivity.__mapper__.class_manager
        ms, act = models.MarkingSession, models.SessionActivity

        def typed(name: str, type_: Any) -> Any:
            return sa.cast(sa.bindparam(name), type_)

        values = [
            typed("action", sa.String),
            typed("project_id", sa.BigInteger),
            typed("task_id", sa.BigInteger),
            typed("task_definition_id", sa.BigInteger),
            # No CAST here: SQLite would turn the timestamp into a number.
            sa.bindparam("at", type_=UTCDateTime),
            sa.bindparam("at", type_=UTCDateTime),
        ]
        table = act.__table__
        target = [
            table.c[name]
            for name in ("marking_session_id", *ACTIVITY_COLUMNS, "created_at", "updated_at")
        ]
        # Every activity is written by this one statement: append to the session only while
        # it is still open, and only if it is this key's (a cached id from before a database
        # restore must not put the activity into another tutor's session). FOR SHARE makes a
        # concurrent sweep wait for this INSERT, so it never closes a session before an
        # activity it is about to receive (R3).
        self._append_if_open = (
            sa.insert(act)
            .from_select(
                target,
                sa.select(ms.id, *values)
                .where(
                    ms.id == sa.bindparam("sid"),
                    ms.end_time.is_(None),
                    ms.marker_id == sa.bindparam("marker_id"),
                    ms.unit_id == sa.bindparam("unit_id"),
                    ms.ip_address == sa.bindparam("ip_address"),
                )
                .with_for_update(read=True),
            )
            .returning(table.c.id)
        )
        last = last_activity_of(models)
        self._open_session = (
            sa.select(ms.id, ms.start_time, last.label("last"))
            .where(
                ms.marker_id == sa.bindparam("marker_id"),
                ms.unit_id == sa.bindparam("unit_id"),
                ms.ip_address == sa.bindparam("ip_address"),
                ms.end_time.is_(None),
            )
            .with_for_update(of=ms)
        )
        self._create_session = sa.insert(ms).returning(ms.id)

    def connect(self) -> sa.Connection:
        return self.engine().connect()

    @staticmethod
    def _params(a: Activity) -> dict[str, Any]:
        return {
            "marker_id": a.marker_id,
            "unit_id": a.unit_id,
            "ip_address": a.ip_address,
            "action": a.action,
            "project_id": a.project_id,
            "task_id": a.task_id,
            "task_definition_id": a.task_definition_id,
            "at": a.at,
        }

    def append_if_open(self, session_id: int, a: Activity) -> Any | None:
        """One INSERT in one round trip; None when the session is closed or gone.

        The statement is its own transaction (autocommit): it is atomic alone, and a separate
        COMMIT would cost a second round trip on the hot path.
        """
        engine = self.engine()
        if self._autocommit is None or self._autocommit[0] is not engine:
            self._autocommit = (engine, engine.execution_options(isolation_level="AUTOCOMMIT"))
        with self._autocommit[1].connect() as conn:
            return self._append(conn, session_id, a)

    def _insert(self, conn: sa.Connection, params: dict[str, Any]) -> int | None:
        """Run the append statement; the new activity's id, or None (the session is closed).

        On psycopg, unless someone listens to the engine's statement events (tracing, tests),
        the statement — compiled once — goes straight to the driver: SQLAlchemy's per-call
        execution machinery would be a sixth of the hot path (benchmarks/README.md, B1).
        Errors still come out as SQLAlchemy's, and a lost connection is invalidated.
        """
        dialect = conn.dialect
        events = conn.dispatch
        if (
            dialect.paramstyle != "pyformat"
            or events.before_cursor_execute
            or events.after_cursor_execute
            or dialect.dispatch.handle_error
        ):
            return conn.execute(self._append_if_open, params).scalar()
        sql = self._driver_sql.get(dialect.name)
        if sql is None:
            sql = self._driver_sql[dialect.name] = str(
                self._append_if_open.compile(dialect=dialect)
            )
        pooled = conn.connection
        try:
            row = pooled.driver_connection.execute(sql, params).fetchone()  # type: ignore[union-attr]
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, pooled.dbapi_connection, None):
                conn.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                sql, params, exc, dialect.loaded_dbapi.Error, dialect=dialect
            ) from exc
        return None if row is None else int(row[0])

    def _append(self, conn: sa.Connection, session_id: int, a: Activity) -> Any | None:
        """The stored activity as a detached ORM object, ready to be merged into a session;
        None when the session is not open."""
        activity_id = self._insert(conn, {"sid": session_id, **self._params(a)})
        if activity_id is None:
            return None
        # Every other column is what was just written: only the id comes back.
        values = {
            "id": activity_id,
            "marking_session_id": session_id,
            "action": a.action,
            "project_id": a.project_id,
            "task_id": a.task_id,
            "task_definition_id": a.task_definition_id,
            "created_at": a.at,
            "updated_at": a.at,
        }
        # As the ORM builds a loaded object: no attribute events, no INSERT pending.
        activity = self._activity_class.new_instance()
        activity.__dict__.update(values)
        make_transient_to_detached(activity)
        return activity

    def record(self, a: Activity) -> Recorded:
        """Continue the key's open session, or close it and start a new one (R2)."""
        key = {"marker_id": a.marker_id, "unit_id": a.unit_id, "ip_address": a.ip_address}
        for attempt in range(1, self.attempts + 1):
            with self.connect() as conn:
                try:
                    return self._record(conn, key, a)
                except IntegrityError:
                    # Another request opened this key's session between our SELECT and
                    # INSERT; the partial unique index refused the second one (R5).
                    conn.rollback()
                    if attempt == self.attempts:
                        raise
        raise AssertionError("unreachable")

    def _record(self, conn: sa.Connection, key: dict[str, Any], a: Activity) -> Recorded:
        # The session appended to below is locked or was just created by this transaction,
        # so it is open: the append cannot come back empty.
        row = conn.execute(self._open_session, key).first()
        if row is not None:
            if continues(a.at, row.last, self.timeout):
                activity = self._append(conn, row.id, a)
                conn.commit()
                return Recorded(activity, row.id, max(row.last, a.at))
            idle = [(row.id, row.start_time, row.last)]
            close_sessions(conn, self.models, idle, self.min_minutes, a.at)
        session_id = conn.scalar(
            self._create_session,
            {**key, "start_time": a.at, "created_at": a.at, "updated_at": a.at},
        )
        activity = self._append(conn, session_id, a)
        conn.commit()
        return Recorded(activity, session_id, a.at)


# KEYS[1] = the key's hash {sid, last}; ARGV = t (µs), timeout (µs), ttl (ms).
# Returns the open session's id when t continues it (R2), moving `last` only forwards.
LOOKUP = """
local cur = redis.call('HMGET', KEYS[1], 'sid', 'last')
if not cur[1] then return false end
local t = tonumber(ARGV[1])
local last = tonumber(cur[2])
if t - last >= tonumber(ARGV[2]) then return false end
if t > last then redis.call('HSET', KEYS[1], 'last', ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return cur[1]
"""

# KEYS[1]; ARGV = sid, last (µs), ttl (ms). Caches the session SQL chose. A newer session
# (a larger id) already cached wins, and `last` never moves backwards.
REMEMBER = """
local cur = redis.call('HMGET', KEYS[1], 'sid', 'last')
local sid = tonumber(ARGV[1])
if cur[1] and cur[1] ~= ARGV[4] then
  local csid = tonumber(cur[1])
  if csid > sid then return 0 end
  if csid == sid and tonumber(cur[2]) >= tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
end
redis.call('HSET', KEYS[1], 'sid', ARGV[1], 'last', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class CircuitBreaker:
    """Skips Redis for ``retry_after`` seconds after an error; logs each change of state once."""

    def __init__(self, retry_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_after = retry_after
        self.clock = clock
        self._open_until: float | None = None
        self._lock = threading.Lock()
        self.failures = 0

    def allows(self) -> bool:
        until = self._open_until
        return until is None or self.clock() >= until

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            was_closed = self._open_until is None
            self._open_until = self.clock() + self.retry_after
        if was_closed:
            logger.error(
                "Redis failed (%s: %s); recording through SQL only, retrying Redis in %.0f s",
                type(exc).__name__,
                exc,
                self.retry_after,
            )

    def succeeded(self) -> None:
        if self._open_until is None:  # the usual case, without taking the lock
            return
        with self._lock:
            if self._open_until is None:
                return
            self._open_until = None
        logger.warning("Redis is back; recording through Redis again")


class RedisStore:
    """The open session of each key, cached in Redis with TTL = TIMEOUT."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        timeout: timedelta,
        breaker: CircuitBreaker,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout_us = timeout // timedelta(microseconds=1)
        self.ttl_ms = max(1, timeout // timedelta(milliseconds=1))
        self.breaker = breaker
        self._lookup = client.register_script(LOOKUP)
        self._remember = client.register_script(REMEMBER)

    def key(self, marker_id: int, unit_id: int, ip_address: str) -> str:
        return f"{self.prefix}:session:{marker_id}:{unit_id}:{ip_address}"

    def parse_key(self, key: str) -> tuple[int, int, str] | None:
        """The (marker_id, unit_id, ip_address) of one of our keys; None for any other key."""
        head = f"{self.prefix}:session:"
        if not key.startswith(head):
            return None
        parts = key[len(head) :].split(":", 2)  # an IPv6 address keeps its colons
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        return int(parts[0]), int(parts[1]), parts[2]

    def lookup(self, key: str, t: datetime) -> int | None:
        """One round trip: the open session ``t`` continues, or None."""
        sid = self._lookup(keys=[key], args=[to_micros(t), self.timeout_us, self.ttl_ms])
        return int(sid) if sid is not None else None

    def remember(
        self, key: str, session_id: int, last: datetime, *, stale: int | None = None
    ) -> None:
        """Cache the key's open session. A newer cached session wins (ids only grow), except
        over ``stale``: a cached id SQL has just refused for this key (e.g. after a restore
        reset the ids), which is replaced whatever its number."""
        args = [session_id, to_micros(last), self.ttl_ms, "" if stale is None else stale]
        self._remember(keys=[key], args=args)


def redis_client(
    url: str | None, options: dict[str, Any], injected: redis.Redis | None
) -> redis.Redis:
    """The Redis client: the injected one, one for ``url``, or an embedded in-process store."""
    if injected is not None:
        return injected
    if url is None:
        import fakeredis

        # Each app gets its own embedded server; nothing is shared between processes.
        return fakeredis.FakeRedis(server=fakeredis.FakeServer())
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kwargs: dict[str, Any] = {**REDIS_CLIENT_DEFAULTS, "retry": Retry(NoBackoff(), 0), **options}
    return redis.Redis.from_url(url, **kwargs)
