"""Every configuration key of the extension, with its default, in one place."""

from __future__ import annotations

from typing import Any, Final


class ConfigVars:
    """Names of the ``app.config`` keys read by :class:`tutor_times.TutorTimes`."""

    SESSION_TIMEOUT: Final = "TUTOR_TIMES_SESSION_TIMEOUT"
    MIN_SESSION_MINUTES: Final = "TUTOR_TIMES_MIN_SESSION_MINUTES"
    ACTIONS: Final = "TUTOR_TIMES_ACTIONS"
    STORE: Final = "TUTOR_TIMES_STORE"
    REDIS_URL: Final = "TUTOR_TIMES_REDIS_URL"
    REDIS_OPTIONS: Final = "TUTOR_TIMES_REDIS_OPTIONS"
    REDIS_PREFIX: Final = "TUTOR_TIMES_REDIS_PREFIX"
    REDIS_RETRY_AFTER: Final = "TUTOR_TIMES_REDIS_RETRY_AFTER"
    REDIS_CLUSTER: Final = "TUTOR_TIMES_REDIS_CLUSTER"
    REPORTS_BIND: Final = "TUTOR_TIMES_REPORTS_BIND"
    MAX_CLOCK_SKEW: Final = "TUTOR_TIMES_MAX_CLOCK_SKEW"
    MAX_BACKDATE: Final = "TUTOR_TIMES_MAX_BACKDATE"
    CLIENT_ACTIONS: Final = "TUTOR_TIMES_CLIENT_ACTIONS"
    SQL_TIMEOUT: Final = "TUTOR_TIMES_SQL_TIMEOUT"
    SQL_POOL_SIZE: Final = "TUTOR_TIMES_SQL_POOL_SIZE"
    SWEEP_INTERVAL: Final = "TUTOR_TIMES_SWEEP_INTERVAL"
    SWEEP_BATCH_SIZE: Final = "TUTOR_TIMES_SWEEP_BATCH_SIZE"
    IN_PROCESS_SWEEPER: Final = "TUTOR_TIMES_IN_PROCESS_SWEEPER"
    URL_PREFIX: Final = "TUTOR_TIMES_URL_PREFIX"
    IP_STORAGE: Final = "TUTOR_TIMES_IP_STORAGE"
    IP_HASH_KEY: Final = "TUTOR_TIMES_IP_HASH_KEY"


DEFAULT_ACTIONS: Final = (
    "inbox",
    "GET",
    "PUT",
    "assessing",
    "add-comment",
    "get-submission-details",
)

#: The action that counts as one assessment. Only tracked host endpoints record it (R11).
ASSESSING: Final = "assessing"

#: What a client may report about itself through ``POST /activities`` (R11): reading, never
#: assessing or commenting, which only the host's tracked endpoints record.
DEFAULT_CLIENT_ACTIONS: Final = ("inbox", "get-submission-details")

#: Roles (as returned by the host's ``role_loader``) whose actions are tracked (R7).
TRACKED_ROLES: Final = frozenset({"admin", "convenor", "tutor"})

STORES: Final = ("redis", "sql")

DEFAULTS: Final[dict[str, Any]] = {
    # Seconds of inactivity after which a marking session ends (R2).
    ConfigVars.SESSION_TIMEOUT: 900,
    # Shortest duration recorded for a closed session, in whole minutes (R4).
    ConfigVars.MIN_SESSION_MINUTES: 1,
    ConfigVars.ACTIONS: DEFAULT_ACTIONS,
    ConfigVars.STORE: "redis",
    # Unset: an in-process embedded store, so nothing has to be installed to try it.
    ConfigVars.REDIS_URL: None,
    # Extra keyword arguments for ``redis.Redis.from_url`` (``RedisCluster.from_url`` on a
    # cluster); they override ours.
    ConfigVars.REDIS_OPTIONS: {},
    ConfigVars.REDIS_PREFIX: "tutor_times",
    # Seconds the tracker skips Redis after a Redis error (circuit breaker).
    ConfigVars.REDIS_RETRY_AFTER: 30.0,
    # TUTOR_TIMES_REDIS_URL names a node of a Redis Cluster: the client follows its slots,
    # and the worker listens for expiry events on every primary.
    ConfigVars.REDIS_CLUSTER: False,
    # The Flask-SQLAlchemy bind (a key of SQLALCHEMY_BINDS, e.g. a read replica) the report
    # endpoints read from. None: the primary. Tracking and closing always use the primary.
    ConfigVars.REPORTS_BIND: None,
    # How far in the future an explicit ``at`` may lie before it is rejected.
    ConfigVars.MAX_CLOCK_SKEW: 60.0,
    # How far in the past a live activity's ``at`` may lie (R2); at most the session timeout.
    # Older activities are history, and the sweep waits this much longer than the timeout so
    # that a late activity always finds its session still open (R6). None: 60 s, or the
    # timeout if that is shorter.
    ConfigVars.MAX_BACKDATE: None,
    # The actions a client may report itself through POST /activities (R11). None: those of
    # DEFAULT_CLIENT_ACTIONS that TUTOR_TIMES_ACTIONS allows.
    ConfigVars.CLIENT_ACTIONS: None,
    # Seconds one tracking write may take (statement, lock wait and pool checkout) before it
    # is given up, logged and counted, so a slow database never holds the host's view (R9).
    ConfigVars.SQL_TIMEOUT: 1.0,
    # Connections of the tracking pool (plus as many again in overflow). Tracking writes on
    # connections of its own so that it never waits for the host's pool while the request
    # holds one of its connections.
    ConfigVars.SQL_POOL_SIZE: 5,
    # Seconds between two passes of the idle-session sweep (worker, embedded sweeper).
    ConfigVars.SWEEP_INTERVAL: 60.0,
    # Sessions closed per transaction by the sweep.
    ConfigVars.SWEEP_BATCH_SIZE: 1000,
    # A sweeper thread inside the app process. None: on with the embedded store only.
    ConfigVars.IN_PROCESS_SWEEPER: None,
    ConfigVars.URL_PREFIX: "/tutor-times",
    # How much of an IP address is stored (and used in keys): "full", "truncated"
    # (IPv4 /24, IPv6 /48) or "hashed" (HMAC-SHA256 with IP_HASH_KEY).
    ConfigVars.IP_STORAGE: "full",
    # The secret for "hashed"; None: the app's SECRET_KEY.
    ConfigVars.IP_HASH_KEY: None,
}

# Short timeouts and no retry loop: a stalled Redis must cost a tracked request a quarter
# of a second once, not the 5 s a command waits with redis-py's defaults (benchmarks, B5).
REDIS_CLIENT_DEFAULTS: Final[dict[str, Any]] = {
    "socket_connect_timeout": 0.25,
    "socket_timeout": 0.25,
    "health_check_interval": 0,
}
