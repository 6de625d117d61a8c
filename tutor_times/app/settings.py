"""Every ``TUTOR_TIMES_*`` key read once, checked, into one typed object.

A wrong value fails at ``init_app`` with the key's name and what it must be, never later on
a request. :data:`tutor_times.core.constants.DEFAULTS` holds the defaults.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..core.constants import ASSESSING, DEFAULT_CLIENT_ACTIONS, RETENTION_MODES, STORES, ConfigVars
from ..core.errors import ConfigurationError
from ..core.privacy import IP_STORAGE_MODES

#: seconds a live activity may lie in the past when TUTOR_TIMES_MAX_BACKDATE is unset
DEFAULT_MAX_BACKDATE = 60.0


def _number(config: Mapping[str, Any], key: str, *, minimum: float, strict: bool) -> float:
    value = config[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value < minimum
        or (strict and value == minimum)
    ):
        kind = (
            "positive" if strict else "non-negative" if minimum == 0 else f"({minimum:g} or more)"
        )
        raise ConfigurationError(f"{key} must be a {kind} number of seconds, got {value!r}")
    return float(value)


def _whole_number(config: Mapping[str, Any], key: str, why: str = "") -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{key} must be a whole number >= 1{why}, got {value!r}")
    return value


def _names(config: Mapping[str, Any], key: str, *, allow_empty: bool = False) -> frozenset[str]:
    value = config[key]
    if (
        isinstance(value, str)
        or not isinstance(value, Collection)
        or (not value and not allow_empty)
        or not all(isinstance(a, str) and a for a in value)
    ):
        kind = "list" if allow_empty else "non-empty list"
        raise ConfigurationError(f"{key} must be a {kind} of action names, got {value!r}")
    return frozenset(value)


def _choice(config: Mapping[str, Any], key: str, choices: Collection[str]) -> str:
    value = config[key]
    if value not in choices:
        raise ConfigurationError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _backdate(config: Mapping[str, Any], timeout: float) -> float:
    """TUTOR_TIMES_MAX_BACKDATE: at most the timeout (older activities are history)."""
    if config[ConfigVars.MAX_BACKDATE] is None:
        return min(DEFAULT_MAX_BACKDATE, timeout)
    backdate = _number(config, ConfigVars.MAX_BACKDATE, minimum=0, strict=False)
    if backdate > timeout:
        raise ConfigurationError(
            f"{ConfigVars.MAX_BACKDATE} must not exceed {ConfigVars.SESSION_TIMEOUT}"
            f" ({timeout:g} s), got {backdate!r}: older activities are history"
        )
    return backdate


def _client_actions(config: Mapping[str, Any], actions: frozenset[str]) -> frozenset[str]:
    """TUTOR_TIMES_CLIENT_ACTIONS: allowed actions, never ``assessing`` (R11)."""
    if config[ConfigVars.CLIENT_ACTIONS] is None:
        return frozenset(DEFAULT_CLIENT_ACTIONS) & actions
    client_actions = _names(config, ConfigVars.CLIENT_ACTIONS, allow_empty=True)
    if ASSESSING in client_actions:
        raise ConfigurationError(
            f"{ConfigVars.CLIENT_ACTIONS} must not list {ASSESSING!r}: assessments come only"
            " from the host's tracked endpoints, never from what a client reports (R11)"
        )
    if not client_actions <= actions:
        unknown = ", ".join(sorted(client_actions - actions))
        raise ConfigurationError(
            f"{ConfigVars.CLIENT_ACTIONS} names actions that {ConfigVars.ACTIONS} does not"
            f" allow: {unknown}"
        )
    return client_actions


def _mapping(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = config[key]
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{key} must be a dict of keyword arguments, got {value!r}")
    return dict(value)


def _optional_bool(config: Mapping[str, Any], key: str) -> bool | None:
    value = config[key]
    if value is not None and not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be True, False or None, got {value!r}")
    return value


def _path(config: Mapping[str, Any], key: str) -> str:
    value = config[key]
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigurationError(f"{key} must be a path starting with '/', got {value!r}")
    return value


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config[key]
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be True or False, got {value!r}")
    return value


def _redis_cluster(config: Mapping[str, Any]) -> bool:
    cluster = config[ConfigVars.REDIS_CLUSTER]
    if not isinstance(cluster, bool):
        raise ConfigurationError(
            f"{ConfigVars.REDIS_CLUSTER} must be True or False, got {cluster!r}"
        )
    if cluster and not config[ConfigVars.REDIS_URL]:
        raise ConfigurationError(
            f"{ConfigVars.REDIS_CLUSTER} needs {ConfigVars.REDIS_URL}: the URL of one of the"
            " cluster's nodes"
        )
    return cluster


def _reports_bind(config: Mapping[str, Any]) -> str | None:
    """The bind reports read from. A name SQLALCHEMY_BINDS lacks is refused here, so a typo
    cannot leave the reports on the primary unnoticed."""
    bind = config[ConfigVars.REPORTS_BIND]
    binds = config.get("SQLALCHEMY_BINDS") or {}
    if bind is not None and (not isinstance(bind, str) or bind not in binds):
        raise ConfigurationError(
            f"{ConfigVars.REPORTS_BIND} must be the name of a bind in SQLALCHEMY_BINDS or None,"
            f" got {bind!r}"
        )
    return bind


@dataclass(frozen=True)
class Settings:
    """The extension's configuration for one app, after checking."""

    #: inactivity that ends a session (R2)
    timeout: timedelta
    #: the shortest recorded duration of a closed session (R4)
    min_minutes: int
    #: what may be recorded at all (R8)
    actions: frozenset[str]
    #: what a client may report itself (R11), a subset of ``actions``
    client_actions: frozenset[str]
    store: str
    redis_url: str | None
    redis_options: dict[str, Any]
    redis_prefix: str
    redis_retry_after: float
    #: ``redis_url`` names a node of a Redis Cluster
    redis_cluster: bool
    #: the bind the report endpoints read from; None: the primary
    reports_bind: str | None
    #: how far in the future a live activity may lie
    max_skew: timedelta
    #: how far in the past a live activity may lie (R2); the sweep waits this much longer
    max_backdate: timedelta
    sweep_interval: float
    sweep_batch_size: int
    #: None: on with the embedded store only
    in_process_sweeper: bool | None
    url_prefix: str
    ip_storage: str
    ip_hash_key: Any
    #: seconds one tracking write may take, pool checkout included (R9)
    sql_timeout: float
    sql_pool_size: int
    #: the largest request body the endpoints read
    max_body_bytes: int
    operations: Operations
    #: whether the blueprint serves the HTML dashboard pages
    dashboard: bool
    #: seconds one statement of a report may run (then the report is a 503)
    report_timeout: float
    #: the most sessions a what-if may cut (then the report is a 413)
    whatif_max_sessions: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        timeout = _number(config, ConfigVars.SESSION_TIMEOUT, minimum=0, strict=True)
        backdate = _backdate(config, timeout)
        actions = _names(config, ConfigVars.ACTIONS)
        client_actions = _client_actions(config, actions)
        redis_options = _mapping(config, ConfigVars.REDIS_OPTIONS)
        in_process = _optional_bool(config, ConfigVars.IN_PROCESS_SWEEPER)
        prefix = _path(config, ConfigVars.URL_PREFIX)
        return cls(
            timeout=timedelta(seconds=timeout),
            min_minutes=_whole_number(
                config,
                ConfigVars.MIN_SESSION_MINUTES,
                " (a closed session always has a positive duration)",
            ),
            actions=actions,
            client_actions=client_actions,
            store=_choice(config, ConfigVars.STORE, STORES),
            redis_url=config[ConfigVars.REDIS_URL] or None,
            redis_options=redis_options,
            redis_prefix=str(config[ConfigVars.REDIS_PREFIX]),
            redis_retry_after=_number(
                config, ConfigVars.REDIS_RETRY_AFTER, minimum=0, strict=False
            ),
            redis_cluster=_redis_cluster(config),
            reports_bind=_reports_bind(config),
            max_skew=timedelta(
                seconds=_number(config, ConfigVars.MAX_CLOCK_SKEW, minimum=0, strict=False)
            ),
            max_backdate=timedelta(seconds=backdate),
            sweep_interval=_number(config, ConfigVars.SWEEP_INTERVAL, minimum=0, strict=True),
            sweep_batch_size=_whole_number(config, ConfigVars.SWEEP_BATCH_SIZE),
            in_process_sweeper=in_process,
            url_prefix=prefix,
            ip_storage=_choice(config, ConfigVars.IP_STORAGE, IP_STORAGE_MODES),
            ip_hash_key=config[ConfigVars.IP_HASH_KEY] or config.get("SECRET_KEY"),
            sql_timeout=_number(config, ConfigVars.SQL_TIMEOUT, minimum=0, strict=True),
            sql_pool_size=_whole_number(config, ConfigVars.SQL_POOL_SIZE),
            max_body_bytes=_whole_number(config, ConfigVars.MAX_BODY_BYTES),
            operations=Operations.from_config(config),
            dashboard=_flag(config, ConfigVars.DASHBOARD),
            report_timeout=_number(config, ConfigVars.REPORT_TIMEOUT, minimum=0, strict=True),
            whatif_max_sessions=_whole_number(config, ConfigVars.WHATIF_MAX_SESSIONS),
        )

    @property
    def closing_delay(self) -> timedelta:
        """How long the sweep waits after a session's last activity before closing it (R6):
        the timeout, plus the backdating window so a late activity finds it open."""
        return self.timeout + self.max_backdate


@dataclass(frozen=True)
class Operations:
    """The settings of health, metrics, idempotency and retention."""

    #: seconds an idempotency key's first answer is kept (at least a day)
    idempotency_ttl: timedelta
    health_public: bool
    #: a worker silent for longer fails /health; None: shown, never failing
    health_max_heartbeat_age: timedelta | None
    metrics: bool
    metrics_token: str | None
    metrics_public: bool
    #: closed sessions older than this are removed once a day; None: kept forever
    retention: timedelta | None
    retention_anonymize: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Operations:
        ttl = _number(config, ConfigVars.IDEMPOTENCY_TTL, minimum=86400, strict=False)
        token = config[ConfigVars.METRICS_TOKEN]
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            raise ConfigurationError(
                f"{ConfigVars.METRICS_TOKEN} must be a string of at least 16 characters"
            )
        metrics, public = (
            _flag(config, ConfigVars.METRICS),
            _flag(config, ConfigVars.METRICS_PUBLIC),
        )
        max_age = None
        if config[ConfigVars.HEALTH_MAX_HEARTBEAT_AGE] is not None:
            max_age = timedelta(
                seconds=_number(config, ConfigVars.HEALTH_MAX_HEARTBEAT_AGE, minimum=0, strict=True)
            )
        days = config[ConfigVars.RETENTION_DAYS]
        retention = None
        if days is not None:
            retention = timedelta(days=_whole_number(config, ConfigVars.RETENTION_DAYS))
        mode = _choice(config, ConfigVars.RETENTION_MODE, RETENTION_MODES)
        return cls(
            idempotency_ttl=timedelta(seconds=ttl),
            health_public=_flag(config, ConfigVars.HEALTH_PUBLIC),
            health_max_heartbeat_age=max_age,
            metrics=metrics,
            metrics_token=token,
            metrics_public=public,
            retention=retention,
            retention_anonymize=mode == "anonymize",
        )
