"""Every configuration key of the extension, with its default, in one place."""

from __future__ import annotations

from typing import Any, Final


class ConfigVars:
    """Names of the ``app.config`` keys read by :class:`tutor_times.TutorTimes`.

    The ``#:`` comment above each name is what the documentation's configuration page says
    about the key, beside its default from :data:`tutor_times.core.constants.DEFAULTS`; a name
    without one fails the documentation's build and ``tests/integration/test_docs.py``.
    """

    #: Seconds of inactivity that end a session.
    SESSION_TIMEOUT: Final = "TUTOR_TIMES_SESSION_TIMEOUT"
    #: Shortest duration of a closed session, in whole minutes (≥ 1).
    MIN_SESSION_MINUTES: Final = "TUTOR_TIMES_MIN_SESSION_MINUTES"
    #: The actions that may be recorded.
    ACTIONS: Final = "TUTOR_TIMES_ACTIONS"
    #: ``"redis"``: Redis fast path with SQL fallback; ``"sql"``: SQL only, no Redis at all.
    STORE: Final = "TUTOR_TIMES_STORE"
    #: Redis server URL; unset: an embedded in-process store (fakeredis), one per process.
    REDIS_URL: Final = "TUTOR_TIMES_REDIS_URL"
    #: Extra keyword arguments for ``redis.Redis.from_url`` (``RedisCluster.from_url`` on a
    #: cluster); they override the short timeouts.
    REDIS_OPTIONS: Final = "TUTOR_TIMES_REDIS_OPTIONS"
    #: Prefix of every Redis key.
    REDIS_PREFIX: Final = "TUTOR_TIMES_REDIS_PREFIX"
    #: Seconds the tracker skips Redis after a Redis error.
    REDIS_RETRY_AFTER: Final = "TUTOR_TIMES_REDIS_RETRY_AFTER"
    #: :confval:`TUTOR_TIMES_REDIS_URL` names one node of a Redis Cluster (see :doc:`Redis Cluster
    #: </operations/scaling>`).
    REDIS_CLUSTER: Final = "TUTOR_TIMES_REDIS_CLUSTER"
    #: The ``SQLALCHEMY_BINDS`` key (e.g. a read replica) the report endpoints read from;
    #: ``None``: the primary. Tracking and closing always use the primary (see :doc:`Reports on
    #: a read replica </operations/scaling>`).
    REPORTS_BIND: Final = "TUTOR_TIMES_REPORTS_BIND"
    #: Seconds an explicit ``at`` may lie in the future.
    MAX_CLOCK_SKEW: Final = "TUTOR_TIMES_MAX_CLOCK_SKEW"
    #: Seconds a live activity's ``at`` may lie in the past (at most the timeout); ``None``: 60,
    #: or the timeout if shorter. The sweep waits this much longer than the timeout, so a late
    #: activity always finds its session open (R2, R6).
    MAX_BACKDATE: Final = "TUTOR_TIMES_MAX_BACKDATE"
    #: The actions a client may report itself with ``POST /activities`` (R11); ``None``:
    #: ``inbox`` and ``get-submission-details``, as far as :confval:`TUTOR_TIMES_ACTIONS` allows them
    #: (if it allows neither, the app starts and ``POST /activities`` answers 400). Only a list
    #: you set that names an action :confval:`TUTOR_TIMES_ACTIONS` does not allow stops the app.
    #: Never ``assessing`` unless you list it.
    CLIENT_ACTIONS: Final = "TUTOR_TIMES_CLIENT_ACTIONS"
    #: Seconds one tracking write may take — pool checkout, statement and lock waits — before it
    #: is given up, logged and counted (R9).
    SQL_TIMEOUT: Final = "TUTOR_TIMES_SQL_TIMEOUT"
    #: Connections of the tracker's own pool (plus as many again in overflow); see
    #: :doc:`Connections </user/database>`.
    SQL_POOL_SIZE: Final = "TUTOR_TIMES_SQL_POOL_SIZE"
    #: The largest request body the endpoints read; a larger one is a ``413``, refused unread
    #: (the host's ``MAX_CONTENT_LENGTH`` wins when smaller).
    MAX_BODY_BYTES: Final = "TUTOR_TIMES_MAX_BODY_BYTES"
    #: Seconds from the start of one pass of the idle-session sweep to the start of the next (at
    #: once after a longer pass).
    SWEEP_INTERVAL: Final = "TUTOR_TIMES_SWEEP_INTERVAL"
    #: Sessions closed per transaction by the sweep.
    SWEEP_BATCH_SIZE: Final = "TUTOR_TIMES_SWEEP_BATCH_SIZE"
    #: A sweeper thread in each app process; ``None``: on with the embedded store only.
    IN_PROCESS_SWEEPER: Final = "TUTOR_TIMES_IN_PROCESS_SWEEPER"
    #: Where the report endpoints are mounted.
    URL_PREFIX: Final = "TUTOR_TIMES_URL_PREFIX"
    #: How much of an IP address is kept: ``"full"``, ``"truncated"`` (IPv4 /24, IPv6 /48) or
    #: ``"hashed"`` (HMAC-SHA256) — see :doc:`Privacy </user/privacy>`.
    IP_STORAGE: Final = "TUTOR_TIMES_IP_STORAGE"
    #: The secret for ``"hashed"`` (at least 16 bytes); ``None``: the app's ``SECRET_KEY``.
    IP_HASH_KEY: Final = "TUTOR_TIMES_IP_HASH_KEY"
    #: Seconds the first answer to an ``Idempotency-Key`` is kept (at least a day) — see
    #: :doc:`Operations </operations/retries>`.
    IDEMPOTENCY_TTL: Final = "TUTOR_TIMES_IDEMPOTENCY_TTL"
    #: ``GET /health`` answers anonymous callers (load balancers have no login); ``False``:
    #: signed-in users only.
    HEALTH_PUBLIC: Final = "TUTOR_TIMES_HEALTH_PUBLIC"
    #: Seconds of worker silence after which ``/health`` answers ``503``; ``None``: the age is
    #: shown but never fails the check.
    HEALTH_MAX_HEARTBEAT_AGE: Final = "TUTOR_TIMES_HEALTH_MAX_HEARTBEAT_AGE"
    #: Serve Prometheus metrics at ``/metrics``.
    METRICS: Final = "TUTOR_TIMES_METRICS"
    #: The bearer token a scraper sends for ``/metrics`` (at least 16 characters); ``None``: only
    #: signed-in staff (your ``staff_loader``) may read it.
    METRICS_TOKEN: Final = "TUTOR_TIMES_METRICS_TOKEN"
    #: Serve ``/metrics`` without a token (the host protects it otherwise, e.g. on its network).
    METRICS_PUBLIC: Final = "TUTOR_TIMES_METRICS_PUBLIC"
    #: Days a closed session is kept; the worker removes older ones once a day; ``None``: keep
    #: everything.
    RETENTION_DAYS: Final = "TUTOR_TIMES_RETENTION_DAYS"
    #: What retention does: ``"delete"`` sessions with their activities, or ``"anonymize"``
    #: (blank their IP addresses).
    RETENTION_MODE: Final = "TUTOR_TIMES_RETENTION_MODE"
    #: Serve the HTML :doc:`dashboard </user/dashboard>` pages under the prefix; ``False``:
    #: they answer 404.
    DASHBOARD: Final = "TUTOR_TIMES_DASHBOARD"
    #: Seconds one statement of a report may run, lock waits included (PostgreSQL's
    #: ``statement_timeout``, whatever the host's connection options say; on SQLite a deadline
    #: checked as it runs); past it the report answers ``503`` with a message naming this key.
    REPORT_TIMEOUT: Final = "TUTOR_TIMES_REPORT_TIMEOUT"
    #: The most sessions a what-if (``?timeout=`` on ``summary``, ``timeline`` and the
    #: dashboard) may cut from a range's activities; past it the report answers ``413`` naming
    #: ``timeout``: ask for a shorter range or a longer timeout.
    WHATIF_MAX_SESSIONS: Final = "TUTOR_TIMES_WHATIF_MAX_SESSIONS"


DEFAULT_ACTIONS: Final = (
    "inbox",
    "GET",
    "PUT",
    "assessing",
    "add-comment",
    "get-submission-details",
)

#: The largest id a BIGINT column holds: ids are positive 64-bit integers.
BIGINT_MAX: Final = 2**63 - 1

#: The action that counts as one assessment. Only tracked host endpoints record it (R11).
ASSESSING: Final = "assessing"

#: What a client may report about itself through ``POST /activities`` (R11): reading, never
#: assessing or commenting, which only the host's tracked endpoints record.
DEFAULT_CLIENT_ACTIONS: Final = ("inbox", "get-submission-details")

#: Roles (as returned by the host's ``role_loader``) whose actions are tracked (R7).
TRACKED_ROLES: Final = frozenset({"admin", "convenor", "tutor"})

STORES: Final = ("redis", "sql")

#: what the worker's daily retention does to old sessions
RETENTION_MODES: Final = ("delete", "anonymize")

#: Every key of :class:`ConfigVars` with its default (``None``: unset, see the key).
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
    # The largest request body the endpoints read, in bytes (an activity report is a few
    # hundred); the host's MAX_CONTENT_LENGTH wins when it is smaller.
    ConfigVars.MAX_BODY_BYTES: 64 * 1024,
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
    # Seconds an Idempotency-Key's first answer is kept; never less than a day, so a client
    # retrying through a long outage still gets its first answer.
    ConfigVars.IDEMPOTENCY_TTL: 86400,
    # GET <prefix>/health answers anonymous callers (load balancers have no login).
    ConfigVars.HEALTH_PUBLIC: True,
    # Seconds after which a silent worker makes /health answer 503. None: its age is shown
    # but never fails the check, so a stopped worker does not take the web tier out.
    ConfigVars.HEALTH_MAX_HEARTBEAT_AGE: None,
    # Serve Prometheus metrics at <prefix>/metrics.
    ConfigVars.METRICS: False,
    # The bearer token a scraper must send for /metrics.
    ConfigVars.METRICS_TOKEN: None,
    # Serve /metrics to anyone (the host protects it some other way, e.g. its network).
    ConfigVars.METRICS_PUBLIC: False,
    # Days a closed session is kept; the worker removes older ones once a day. None: forever.
    ConfigVars.RETENTION_DAYS: None,
    # "delete" old sessions with their activities, or "anonymize" (blank their IP addresses).
    ConfigVars.RETENTION_MODE: "delete",
    # The HTML dashboard pages under the prefix (a unit's, and one's own); False: 404.
    ConfigVars.DASHBOARD: True,
    # Seconds one statement of a report may run (lock waits included) before it is stopped
    # (PostgreSQL's statement_timeout; on SQLite a deadline checked as it runs) and the
    # report answers 503: a request someone can make expensive ends
    # before a web server's worker timeout (gunicorn's is 30 s) kills the worker instead.
    ConfigVars.REPORT_TIMEOUT: 20.0,
    # The most sessions a what-if (``?timeout=``) may cut from a range's activities, held in
    # memory to merge and count; past it the report answers 413. A shorter range or a
    # longer timeout cuts fewer.
    ConfigVars.WHATIF_MAX_SESSIONS: 50_000,
}

# Short timeouts and no retry loop: a stalled Redis must cost a tracked request a quarter
# of a second once, not the 5 s a command waits with redis-py's defaults (benchmarks, B5).
REDIS_CLIENT_DEFAULTS: Final[dict[str, Any]] = {
    "socket_connect_timeout": 0.25,
    "socket_timeout": 0.25,
    "health_check_interval": 0,
}
