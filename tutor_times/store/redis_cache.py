"""The Redis session cache: each key's open session, so the hot path need not search SQL.

A key's hash holds its open session's id and last activity with a TTL of the timeout plus
the backdating window (when the sweep may close the session, R6), so the key's expiry event
is the signal to close it; the two
Lua scripts in ``tutor_times/lua/`` (each headed by its KEYS/ARGV contract) read and write it
atomically. SQL stays the source of truth: a missing or wrong entry costs one slow request,
never a wrong session. A circuit breaker skips Redis for a while after an error (R9). On a
Redis Cluster the scripts go straight to the node that serves the key's slot (SlotRoute).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, TypeAlias

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)

from ..core import metrics
from ..core.accounting import to_micros
from ..core.constants import REDIS_CLIENT_DEFAULTS

logger = logging.getLogger("tutor_times")


def lua(name: str) -> str:
    """A Lua script shipped in the package."""
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")


LOOKUP = lua("lookup")
REMEMBER = lua("remember")

#: one Redis, or a Redis Cluster: the store and the listener take either
RedisClient: TypeAlias = "redis.Redis | RedisCluster"

#: what a failing Redis raises; a cluster client can also raise the base RedisClusterException
#: (e.g. while it finds no node for a slot), which is not a RedisError
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)


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
        metrics.failed("redis")
        if was_closed:
            metrics.breaker_changed(open_=True)
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
        metrics.breaker_changed(open_=False)
        logger.warning("Redis is back; recording through Redis again")


#: a node's answers that mean the slot is served elsewhere now: the cluster client follows
#: them (and patches the slot map the direct route uses)
REDIRECT = (MovedError, AskError)
#: a node's answers while the cluster fails over (a primary died and is being replaced):
#: waiting for the failover is what R9 forbids, so Redis is given up at once
FAILING_OVER = (ClusterDownError, TryAgainError)


def on_node(node: redis.Redis, script: Script, key: str, args: list[Any]) -> Any:
    """``script`` on one node, loaded there first if the node does not know it (NOSCRIPT).
    What ``Script.__call__`` does, without its per-call import and argument copies."""
    try:
        return node.evalsha(script.sha, 1, key, *args)
    except NoScriptError:
        script.sha = node.script_load(script.script)
        return node.evalsha(script.sha, 1, key, *args)


class SlotRoute:
    """Runs a key's script on the primary that serves the key's slot, over that node's own
    plain connection pool, found in the slot map the cluster client keeps.

    redis-py's cluster client spends about 40 µs of Python routing each command (B7); this
    finds the node with one CRC and one dict look-up. A redirect (MOVED, ASK: a resharding)
    goes through the cluster client, which follows it and patches the map for the calls
    after it. A node that forgot the scripts (NOSCRIPT) is sent them again.

    A dead node, or a cluster failing over, is never waited for (R9): the cluster client's
    retries and map refreshes would wait for the failover (seconds, with redis-py's default
    retries, which a host's own client may have). The call raises at once (the breaker sends
    the activities through SQL), and the first call after is made *suspect*: it re-reads the
    map, then makes one attempt on the node it names.
    """

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        #: a node timed out, died or said the cluster is failing over: the next call
        #: re-reads the topology first
        self.suspect = False

    def node(self, key: str) -> redis.Redis | None:
        """The plain client of the primary the map says serves ``key``'s slot; None when
        the map has no node for it or the last direct call failed."""
        if self.suspect:
            return None
        nodes = self.cluster.nodes_manager.slots_cache.get(key_slot(key.encode()))
        if not nodes:
            return None
        client: redis.Redis | None = nodes[0].redis_connection
        return client

    def run(self, script: Script, key: str, args: list[Any]) -> Any:
        """``script`` on ``key`` with ``args``: straight to its node when the map knows it,
        else (or after a redirect) through the cluster client, one attempt."""
        node = self.node(key)
        if node is not None:
            try:
                return self._direct(node, script, key, args)
            except REDIRECT:
                pass  # a resharding moved the slot: the cluster client follows
            except (redis.ConnectionError, redis.TimeoutError, *FAILING_OVER):
                # sent again now, the call would wait for the node or the failover: R9's
                # bound is one wait
                self.suspect = True
                raise
        result = self._through_cluster(script, key, args)
        self.suspect = False
        return result

    @staticmethod
    def _direct(node: redis.Redis, script: Script, key: str, args: list[Any]) -> Any:
        """On the node; once more on a new connection if its pooled one was dropped (the
        node closed an idle connection, or restarted): a dead node refuses the second at
        once, a live one answers it."""
        try:
            return on_node(node, script, key, args)
        except redis.TimeoutError:
            raise
        except redis.ConnectionError:
            return on_node(node, script, key, args)

    def _through_cluster(self, script: Script, key: str, args: list[Any]) -> Any:
        """One attempt through the cluster client, on the node its map names (after
        re-reading the map, when the last call failed): it follows a redirect and patches
        the map, but its retries, which wait out a failover, are not used."""
        manager = self.cluster.nodes_manager
        if self.suspect:
            manager.initialize()
        nodes = manager.slots_cache.get(key_slot(key.encode()))
        if not nodes:
            return script(keys=[key], args=args)  # no node for the slot: the client finds one
        target = nodes[0]
        # one attempt: redis-py's cluster client does not retry a command given its node
        execute: Callable[..., Any] = self.cluster.execute_command
        try:
            return execute("EVALSHA", script.sha, 1, key, *args, target_nodes=target)
        except NoScriptError:
            script.sha = target.redis_connection.script_load(script.script)
            return execute("EVALSHA", script.sha, 1, key, *args, target_nodes=target)


class RedisStore:
    """The open session of each key, cached in Redis with TTL = TIMEOUT."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        timeout: timedelta,
        ttl: timedelta | None = None,
        breaker: CircuitBreaker,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout_us = timeout // timedelta(microseconds=1)
        self.ttl_ms = max(1, (ttl or timeout) // timedelta(milliseconds=1))
        self.breaker = breaker
        self._lookup = client.register_script(LOOKUP)
        self._remember = client.register_script(REMEMBER)
        #: on a cluster, the scripts go straight to the node of the key's slot
        self.route = SlotRoute(client) if isinstance(client, RedisCluster) else None

    def _run(self, script: Script, key: str, args: list[Any]) -> Any:
        if self.route is None:
            return script(keys=[key], args=args)
        return self.route.run(script, key, args)

    def key(self, marker_id: int, unit_id: int, ip_address: str) -> str:
        """The session key's name. The braces are a Redis Cluster hash tag: the slot comes
        from the (marker, unit, ip) alone, so the key and its scripts stay on one node, and
        keys of different sessions spread over the cluster."""
        return f"{self.prefix}:{{{marker_id}:{unit_id}:{ip_address}}}:session"

    def parse_key(self, key: str) -> tuple[int, int, str] | None:
        """The (marker_id, unit_id, ip_address) of one of our keys; None for any other key."""
        head, tail = f"{self.prefix}:{{", "}:session"
        if not key.startswith(head) or not key.endswith(tail):
            return None
        tag = key[len(head) : len(key) - len(tail)]
        if "{" in tag or "}" in tag:
            return None  # not a name ``key`` makes: its hash tag would be another slot
        parts = tag.split(":", 2)  # an IPv6 address keeps its colons
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        return int(parts[0]), int(parts[1]), parts[2]

    def lookup(self, key: str, t: datetime) -> int | None:
        """One round trip: the open session ``t`` continues, or None."""
        sid = self._run(self._lookup, key, [to_micros(t), self.timeout_us, self.ttl_ms])
        return int(sid) if sid is not None else None

    def remember(
        self, key: str, session_id: int, last: datetime, *, stale: int | None = None
    ) -> None:
        """Cache the key's open session. A newer cached session wins (ids only grow), except
        over ``stale``: a cached id SQL has just refused for this key (e.g. after a restore
        reset the ids), which is replaced whatever its number."""
        args = [session_id, to_micros(last), self.ttl_ms, "" if stale is None else stale]
        self._run(self._remember, key, args)


def redis_client(
    url: str | None,
    options: dict[str, Any],
    injected: RedisClient | None,
    *,
    cluster: bool = False,
) -> RedisClient:
    """The Redis client: the injected one, one for ``url`` (a Redis Cluster with ``cluster``:
    the URL names any one of its nodes), or an embedded in-process store."""
    if injected is not None:
        return injected
    if url is None:
        import fakeredis

        # Each app gets its own embedded server; nothing is shared between processes.
        return fakeredis.FakeRedis(server=fakeredis.FakeServer())
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retry on either client: a failed call opens the circuit breaker and the activity
    # goes through SQL at once. A cluster client re-reads the topology after a connection
    # error by itself, so the call after a failover finds the promoted node.
    kwargs: dict[str, Any] = {**REDIS_CLIENT_DEFAULTS, "retry": Retry(NoBackoff(), 0), **options}
    if cluster:
        return RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)
