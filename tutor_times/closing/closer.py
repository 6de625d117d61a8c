"""Closing idle sessions with exact end times (R3, R4, R6).

Three paths close a session, all through :func:`~tutor_times.store.models.close_session_ids`: the next activity of the
key (in the store), the periodic sweep here, and the Redis expiry listener (which only
makes closing sooner). SQL is the source of truth; closing is idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import redis
import sqlalchemy as sa
from redis.cluster import RedisCluster

from ..core import metrics
from ..store import figures
from ..store.models import Models
from ..store.redis_cache import REDIS_ERRORS
from ..store.sql import close_session_ids, last_activity_of, lock_keys, tutor_hash

logger = logging.getLogger("tutor_times")


def sweep(
    connect: Callable[[], sa.Connection],
    models: Models,
    *,
    now: datetime,
    timeout: timedelta,
    min_minutes: int,
    batch_size: int,
    key: tuple[int, int, str] | None = None,
    closer: str = metrics.SWEEP,
    idle_after: timedelta | None = None,
) -> int:
    """Close every session idle for ``timeout`` at ``now``, one batch per transaction.

    ``key`` (marker_id, unit_id, ip_address) limits it to one key's open session.
    ``closer`` names the caller for the metrics, which count each session's lag past its
    idle deadline, ``idle_after`` (the session timeout; default ``timeout``) after its last
    activity.

    Safe with several sweepers at once: each locks its batch with SKIP LOCKED, and a
    session locked by an activity being written is, by definition, not idle. The last
    activity is read after the lock is held, so an activity committed meanwhile counts.
    """
    ms, act = models.MarkingSession, models.SessionActivity
    cutoff = now - timeout
    recent = sa.exists().where(act.marking_session_id == ms.id, act.created_at > cutoff)
    scope = [ms.end_time.is_(None), ~recent]
    if key is not None:
        scope += [ms.marker_id == key[0], ms.unit_id == key[1], ms.ip_address == key[2]]
    closed = 0
    after_id = 0
    while True:
        with connect() as s:
            found = s.execute(
                sa.select(ms.id, ms.unit_id, ms.marker_id)
                .where(ms.id > after_id, *scope)
                .order_by(ms.id)
                .limit(batch_size)
            ).all()
            if not found:
                break
            after_id = found[-1].id
            idle, done = _close_batch(s, models, found, scope, cutoff, min_minutes, now)
            s.commit()
        deadline = timeout if idle_after is None else idle_after
        lags = [(now - last - deadline).total_seconds() for sid, _, last in idle if sid in done]
        metrics.sessions_closed(closer, lags)
        n = len(done)
        closed += n
        if n and key is None:
            logger.info("closed %d idle marking sessions", n)
        if len(found) < batch_size:
            break
    return closed


def _close_batch(
    s: sa.Connection,
    models: Models,
    found: Sequence[sa.Row[Any]],
    scope: list[sa.ColumnElement[bool]],
    cutoff: datetime,
    min_minutes: int,
    now: datetime,
) -> tuple[list[tuple[int, datetime, datetime]], set[int]]:
    """Close the sessions of ``found`` still in ``scope`` and idle since ``cutoff``; their
    (id, start, last activity) and the ids closed. The caller commits."""
    ms = models.MarkingSession
    # their tutors' locks before any row's: closing keeps the tutors' figures
    lock_keys(s, [tutor_hash(f.unit_id, f.marker_id) for f in found])
    ids = s.scalars(
        sa.select(ms.id)
        .where(ms.id.in_([f.id for f in found]), *scope)
        .order_by(ms.id)
        .with_for_update(of=ms, skip_locked=True)
    ).all()
    last = last_activity_of(models)
    rows = s.execute(
        sa.select(ms.id, ms.start_time, last.label("last")).where(ms.id.in_(ids))
    ).all()
    idle = [(r.id, r.start_time, r.last) for r in rows if r.last <= cutoff]
    done = set(close_session_ids(s, models, idle, min_minutes, now))
    tutors = {f.id: (f.unit_id, f.marker_id) for f in found}
    closed_now = [
        figures.Touch(*tutors[sid], start, last) for sid, start, last in idle if sid in done
    ]
    figures.refresh(s, models, closed_now, recount=done)
    return idle, done


def oldest_unclosed(conn: sa.Connection, models: Models, *, cutoff: datetime) -> datetime | None:
    """The last activity of the oldest open session idle since before ``cutoff``: evidence
    that nothing is closing sessions. None when there is none."""
    ms, act = models.MarkingSession, models.SessionActivity
    recent = sa.exists().where(act.marking_session_id == ms.id, act.created_at > cutoff)
    query = (
        sa.select(last_activity_of(models))
        .where(ms.end_time.is_(None), ms.start_time <= cutoff, ~recent)
        .order_by(ms.start_time)
        .limit(1)
    )
    value: datetime | None = conn.scalar(query)
    return value


def wants_expiry_events(flags: str) -> str | None:
    """The notify-keyspace-events value that adds expired key events, or None if already on."""
    has_event_class = "E" in flags
    has_expired = "x" in flags or "A" in flags
    if has_event_class and has_expired:
        return None
    return flags + ("" if has_event_class else "E") + ("" if has_expired else "x")


class ExpiryListener:
    """Closes a key's session as soon as Redis expires the key: only a faster path.

    The key's value is gone when the event arrives, so the session is found in SQL. Events
    are late, lost while disconnected, and per node on a cluster; the sweep stays the
    guarantee (R6).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        parse_key: Callable[[str], tuple[int, int, str] | None],
        close_key: Callable[[tuple[int, int, str]], int],
        stop: threading.Event,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        #: called when the node cannot be reached (a cluster then looks for its new primaries)
        self.on_lost = on_lost
        self.parse_key = parse_key
        self.close_key = close_key
        self.stop = stop
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        db_index = client.connection_pool.connection_kwargs.get("db", 0)
        self.channel = f"__keyevent@{db_index}__:expired"
        self.closed = 0

    def enable_notifications(self) -> bool:
        """Turn expired-key events on; on a Redis that refuses CONFIG, say so once and carry
        on. A Redis that cannot be reached raises: that is an outage, not a refusal."""
        try:
            flags = str(
                self.client.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
            )
            wanted = wants_expiry_events(flags)
            if wanted is not None:
                self.client.config_set("notify-keyspace-events", wanted)
            return True
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except redis.RedisError as exc:
            logger.warning(
                "could not enable Redis expiry notifications (%s); idle sessions are closed by"
                " the periodic sweep alone. Set `notify-keyspace-events Ex` in redis.conf to"
                " close them sooner.",
                exc,
            )
            return False

    def handle(self, key: str | bytes) -> None:
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        parsed = self.parse_key(key)
        if parsed is None:
            return
        try:
            self.closed += self.close_key(parsed)
        except Exception:
            logger.exception("could not close the session of the expired key %s", key)

    def run(self) -> None:
        """Listen until ``stop``. While Redis cannot be reached, retry with a doubling delay
        (up to ``max_reconnect_delay``) and log once when it goes and once when it is back;
        on every (re)connection enable the events again, since a restarted Redis forgets a
        CONFIG SET."""
        refused = False  # the server refuses CONFIG: the sweep alone closes sessions
        reachable: bool | None = None
        delay = self.reconnect_delay
        while not self.stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]
            try:
                if not refused:
                    refused = not self.enable_notifications()
                pubsub.subscribe(self.channel)
                if reachable is False:
                    logger.warning("Redis expiry listener reconnected")
                reachable, delay = True, self.reconnect_delay
                while not self.stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self.handle(message["data"])
            except redis.RedisError as exc:
                if reachable is not False:
                    logger.warning(
                        "Redis expiry listener cannot reach Redis (%s: %s); retrying with"
                        " backoff. Until it is back, the periodic sweep alone closes sessions.",
                        type(exc).__name__,
                        exc,
                    )
                reachable = False
                if self.on_lost is not None:
                    self.on_lost()
                self.stop.wait(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
            finally:
                try:
                    pubsub.close()
                except redis.RedisError:
                    pass


class ClusterExpiryListener:
    """The expiry listener of a Redis Cluster: each primary publishes the expiries of its own
    keys only, so one :class:`ExpiryListener` runs per primary, each enabling the events on
    its node. The set of primaries is read again every ``rediscover`` seconds and as soon as
    a listener loses its node: a failover promotes a replica, whose events must be heard."""

    def __init__(
        self,
        client: RedisCluster,
        *,
        parse_key: Callable[[str], tuple[int, int, str] | None],
        close_key: Callable[[tuple[int, int, str]], int],
        stop: threading.Event,
        rediscover: float = 5.0,
    ) -> None:
        self.client = client
        self.parse_key = parse_key
        self.close_key = close_key
        self.stop = stop
        self.rediscover = rediscover
        self._wake = threading.Event()
        #: node name ("host:port") -> its listener, the event that stops it, its thread
        self.nodes: dict[str, tuple[ExpiryListener, threading.Event, threading.Thread]] = {}

    @property
    def closed(self) -> int:
        return sum(listener.closed for listener, _, _ in self.nodes.values())

    def primaries(self) -> dict[str, redis.Redis]:
        """The cluster's primaries as one of its nodes describes them now, by node name.

        Asked with CLUSTER SLOTS rather than by re-initialising the client, which would drop
        the idle connections the tracker's requests reuse."""
        # the cluster client parses the reply into {(first, last): {"primary": (host, port)}}
        slots: Any = self.client.cluster_slots(target_nodes=RedisCluster.RANDOM)
        found: dict[str, redis.Redis] = {}
        for host, port in {shard["primary"] for shard in slots.values()}:
            node = self._node(host, port)
            if node is None:  # a node the client has not met yet (added to the cluster since)
                self.client.nodes_manager.initialize()
                node = self._node(host, port)
            if node is not None:
                found[node.name] = node.redis_connection
        return found

    def _node(self, host: str, port: int) -> Any:
        """The client's node at host:port with its connection, or None."""
        node = self.client.get_node(host=host, port=port)  # type: ignore[no-untyped-call]
        return node if node is not None and node.redis_connection is not None else None

    def follow(self, primaries: dict[str, redis.Redis]) -> None:
        """Listen on each of ``primaries``; stop listening on nodes that are no longer one."""
        for name in set(self.nodes) - set(primaries):
            _, node_stop, thread = self.nodes.pop(name)
            node_stop.set()
            thread.join(timeout=5)
            logger.info("Redis expiry listener left %s: no longer a primary", name)
        for name in set(primaries) - set(self.nodes):
            node_stop = threading.Event()
            listener = ExpiryListener(
                primaries[name],
                parse_key=self.parse_key,
                close_key=self.close_key,
                stop=node_stop,
                on_lost=self._wake.set,
            )
            thread = threading.Thread(
                target=listener.run, name=f"tutor-times-listener-{name}", daemon=True
            )
            thread.start()
            self.nodes[name] = (listener, node_stop, thread)

    def run(self) -> None:
        """Follow the cluster's primaries until ``stop``; then stop every node's listener."""
        try:
            while not self.stop.is_set():
                self._wake.clear()
                try:
                    self.follow(self.primaries())
                except REDIS_ERRORS as exc:
                    logger.warning(
                        "Redis Cluster topology unavailable (%s: %s); retrying. The periodic"
                        " sweep closes sessions meanwhile.",
                        type(exc).__name__,
                        exc,
                    )
                deadline = time.monotonic() + self.rediscover
                while not self.stop.is_set() and not self._wake.is_set():
                    if time.monotonic() >= deadline:
                        break
                    self._wake.wait(0.2)
        finally:
            self.follow({})
