"""The ``TutorTimes`` Flask extension."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import redis
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy

from . import privacy
from .accounting import UTC, utcnow
from .closer import ExpiryListener, sweep, sweep_forever
from .constants import DEFAULTS, STORES, TRACKED_ROLES, ConfigVars
from .decorator import IdSpec, TrackSpec, track_view
from .errors import ConfigurationError
from .models import Models, build_models
from .store import CircuitBreaker, RedisStore, SqlStore, redis_client
from .tracker import Tracker, check_action

F = TypeVar("F", bound=Callable[..., Any])
RoleLoader = Callable[[Any, Any], "str | None"]

EXTENSION_KEY = "tutor_times"
logger = logging.getLogger("tutor_times")


def _whole_number(config: Any, key: str, why: str = "") -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{key} must be a whole number >= 1{why}, got {value!r}")
    return value


def _utc(t: datetime, name: str) -> datetime:
    """An aware datetime in UTC; a naive one is refused (it would be read as local time)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return t.astimezone(UTC)


@dataclass
class _State:
    """What the extension holds for one app."""

    owner: TutorTimes
    tracker: Tracker
    #: the in-process fakeredis: no other process can see it, nor listen to it
    embedded: bool
    timeout: timedelta
    min_minutes: int
    sweep_batch_size: int
    sweep_interval: float
    in_process_sweeper: bool
    sweeper: threading.Thread | None = None
    sweeper_stop: threading.Event = field(default_factory=threading.Event)

    @property
    def redis(self) -> redis.Redis | None:
        store = self.tracker.redis
        return store.client if store is not None else None


class TutorTimes:
    """Tracks marking actions into sessions and reports the time tutors spend marking.

    ``TutorTimes(app, db=db)``, or ``TutorTimes(db=db)`` then ``init_app(app)``.
    ``clock`` returns the current aware UTC datetime (tests inject their own);
    ``redis`` is a client to use instead of ``TUTOR_TIMES_REDIS_URL``;
    ``user_fk``/``unit_fk`` name the host's user and unit primary keys (None: no FK).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: SQLAlchemy | None = None,
        clock: Callable[[], datetime] | None = None,
        redis: redis.Redis | None = None,
        user_fk: str | None = "users.id",
        unit_fk: str | None = "units.id",
    ) -> None:
        if db is None:
            raise ConfigurationError(
                "TutorTimes needs the host's Flask-SQLAlchemy instance: TutorTimes(app, db=db)"
            )
        self.db = db
        self.models: Models = build_models(db, user_fk=user_fk, unit_fk=unit_fk)
        self.MarkingSession = self.models.MarkingSession
        self.SessionActivity = self.models.SessionActivity
        self.clock: Callable[[], datetime] = clock or utcnow
        self._redis = redis
        self._role_loader: RoleLoader | None = None
        self._failures = 0
        self._lock = threading.Lock()
        self.app = app
        if app is not None:
            self.init_app(app)

    # -- setup ---------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'TutorTimes' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        app.extensions[EXTENSION_KEY] = self._build_state(app.config)

        from .cli import cli
        from .views import bp

        app.cli.add_command(cli)
        app.register_blueprint(bp, url_prefix=app.config[ConfigVars.URL_PREFIX])

    def _build_state(self, config: Any) -> _State:
        timeout = config[ConfigVars.SESSION_TIMEOUT]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigurationError(
                f"{ConfigVars.SESSION_TIMEOUT} must be a positive number of seconds, got {timeout!r}"
            )
        min_minutes = _whole_number(
            config,
            ConfigVars.MIN_SESSION_MINUTES,
            " (a closed session always has a positive duration)",
        )
        actions = config[ConfigVars.ACTIONS]
        if (
            isinstance(actions, str)
            or not isinstance(actions, Collection)
            or not actions
            or not all(isinstance(a, str) and a for a in actions)
        ):
            raise ConfigurationError(
                f"{ConfigVars.ACTIONS} must be a non-empty list of action names, got {actions!r}"
            )
        store_name = config[ConfigVars.STORE]
        if store_name not in STORES:
            raise ConfigurationError(
                f"{ConfigVars.STORE} must be one of {', '.join(STORES)}, got {store_name!r}"
            )
        batch_size = _whole_number(config, ConfigVars.SWEEP_BATCH_SIZE)

        embedded = (
            store_name == "redis" and not config[ConfigVars.REDIS_URL] and self._redis is None
        )
        in_process = config[ConfigVars.IN_PROCESS_SWEEPER]
        if in_process is None:
            in_process = embedded
        delta = timedelta(seconds=timeout)
        sql = SqlStore(self.models, lambda: self.db.engine, timeout=delta, min_minutes=min_minutes)
        redis_store = None
        if store_name == "redis":
            client = redis_client(
                config[ConfigVars.REDIS_URL], config[ConfigVars.REDIS_OPTIONS], self._redis
            )
            redis_store = RedisStore(
                client,
                prefix=config[ConfigVars.REDIS_PREFIX],
                timeout=delta,
                breaker=CircuitBreaker(float(config[ConfigVars.REDIS_RETRY_AFTER])),
            )
        policy = privacy.ip_policy(
            config[ConfigVars.IP_STORAGE],
            config[ConfigVars.IP_HASH_KEY] or config.get("SECRET_KEY"),
        )
        tracker = Tracker(
            actions=actions,
            sql=sql,
            redis_store=redis_store,
            # Looked up on each call, so a test can swap the clock of a running app.
            clock=lambda: self.clock(),
            max_skew=timedelta(seconds=config[ConfigVars.MAX_CLOCK_SKEW]),
            ip_policy=policy,
        )
        return _State(
            owner=self,
            tracker=tracker,
            embedded=embedded,
            timeout=delta,
            min_minutes=min_minutes,
            sweep_batch_size=batch_size,
            sweep_interval=float(config[ConfigVars.SWEEP_INTERVAL]),
            in_process_sweeper=bool(in_process),
        )

    @property
    def state(self) -> _State:
        try:
            return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
        except KeyError:
            raise ConfigurationError(
                "TutorTimes is not registered on this app: call tutor_times.init_app(app)"
            ) from None

    # -- host hooks ------------------------------------------------------------

    def role_loader(self, callback: RoleLoader) -> RoleLoader:
        """Register ``callback(user, unit_id)`` -> "admin" | "convenor" | "tutor" | "student" | None."""
        self._role_loader = callback
        return callback

    def role_of(self, user: Any, unit_id: Any) -> str | None:
        if self._role_loader is None:
            raise ConfigurationError(
                "No role_loader registered: decorate a function (user, unit_id) -> role with"
                " @tutor_times.role_loader"
            )
        return self._role_loader(user, unit_id)

    def is_tracked_role(self, user: Any, unit_id: Any) -> bool:
        return self.role_of(user, unit_id) in TRACKED_ROLES

    @staticmethod
    def marker_id_of(user: Any) -> int:
        user_id = user.get_id()
        try:
            return int(user_id)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"the current user's get_id() must be an integer user id, got {user_id!r}"
            ) from None

    # -- tracking ----------------------------------------------------------------

    def track(
        self,
        action: str,
        *,
        unit_id: IdSpec,
        project_id: IdSpec = None,
        task_id: IdSpec = None,
        task_definition_id: IdSpec = None,
        when: Callable[[Any], Any] | None = None,
    ) -> Callable[[F], F]:
        """Record ``action`` whenever the decorated view returns a response below 400.

        Each id is a view-argument name, a callable of the view's kwargs, or None.
        ``when(kwargs)`` returning false skips tracking (e.g. a marker on their own project).
        """
        if self.app is not None:
            check_action(action, self.app.config[ConfigVars.ACTIONS])
        spec = TrackSpec(action, unit_id, project_id, task_id, task_definition_id, when)
        return track_view(self, spec)

    def record_activity(
        self,
        action: str,
        *,
        marker_id: int,
        unit_id: int,
        ip_address: str | None,
        project_id: int | None = None,
        task_id: int | None = None,
        task_definition_id: int | None = None,
        at: datetime | None = None,
    ) -> Any:
        """Record one activity and return it (a ``SessionActivity`` with its session id).

        Raises :class:`InvalidActivityError` before writing anything when input is bad.
        """
        state = self.state
        if state.in_process_sweeper and state.sweeper is None:
            self._start_sweeper(state)
        tracker = state.tracker
        activity = tracker.validate(
            action,
            marker_id=marker_id,
            unit_id=unit_id,
            ip_address=ip_address,
            project_id=project_id,
            task_id=task_id,
            task_definition_id=task_definition_id,
            at=at,
        )
        return tracker.record(activity)

    def count_failure(self) -> None:
        with self._lock:
            self._failures += 1

    @property
    def failures(self) -> int:
        """Tracked requests whose activity could not be recorded, since start."""
        return self._failures

    # -- closing -------------------------------------------------------------

    def close_idle_session(
        self, marker_id: int, unit_id: int, ip_address: str, now: datetime | None = None
    ) -> int:
        """Close one key's open session if it is idle at ``now`` (1), else leave it (0)."""
        return self._sweep(now, key=(marker_id, unit_id, ip_address))

    def close_expired_sessions(self, now: datetime | None = None) -> int:
        """Close every session idle for TIMEOUT at ``now``; returns how many were closed."""
        return self._sweep(now)

    def _sweep(self, now: datetime | None, key: tuple[int, int, str] | None = None) -> int:
        state = self.state
        return sweep(
            state.tracker.sql.connect,
            self.models,
            now=self.clock() if now is None else _utc(now, "now"),
            timeout=state.timeout,
            min_minutes=state.min_minutes,
            batch_size=1 if key else state.sweep_batch_size,
            key=key,
        )

    def purge(
        self,
        before: datetime,
        *,
        anonymize: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete closed sessions that ended before ``before`` and their activities (or,
        with ``anonymize``, blank their IP addresses); returns how many sessions changed."""
        state = self.state
        return privacy.purge(
            state.tracker.sql.connect,
            self.models,
            before=_utc(before, "before"),
            anonymize=anonymize,
            batch_size=state.sweep_batch_size,
            progress=progress,
        )

    def purge_count(self, before: datetime, *, anonymize: bool = False) -> int:
        """How many sessions :meth:`purge` would change."""
        with self.state.tracker.sql.connect() as conn:
            return privacy.purge_count(
                conn, self.models, before=_utc(before, "before"), anonymize=anonymize
            )

    def run_worker(
        self,
        *,
        interval: float | None = None,
        listen: bool = True,
        stop: threading.Event | None = None,
    ) -> None:
        """Sweep every ``interval`` seconds and close sessions on Redis expiry events,
        until ``stop`` is set. Runs in an app context; the listener gets its own thread."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = self.state
        stop = stop or threading.Event()
        interval = state.sweep_interval if interval is None else interval
        listener = None
        store = state.tracker.redis
        if listen and store is not None and not state.embedded:
            listener = self._listener(app, store, stop)
        logger.info(
            "tutor-times worker started: sweep every %.1f s%s",
            interval,
            ", listening for expiry events" if listener else "",
        )
        try:
            sweep_forever(self.close_expired_sessions, interval, stop)
        finally:
            stop.set()
            if listener is not None:
                listener.join(timeout=10)

    def stop_sweeper(self) -> None:
        """Stop this app's in-process sweeper thread, if it runs."""
        state = self.state
        state.sweeper_stop.set()
        if state.sweeper is not None:
            state.sweeper.join(timeout=10)

    def _listener(self, app: Flask, store: RedisStore, stop: threading.Event) -> threading.Thread:
        def close_key(key: tuple[int, int, str]) -> int:
            with app.app_context():
                return self.close_idle_session(*key)

        listener = ExpiryListener(
            store.client, parse_key=store.parse_key, close_key=close_key, stop=stop
        )
        thread = threading.Thread(target=listener.run, name="tutor-times-listener", daemon=True)
        thread.start()
        return thread

    def _start_sweeper(self, state: _State) -> None:
        """The embedded mode's sweeper: a daemon thread of this process, started on first use
        (after any fork). Several processes each run one; the sweep is safe to run at once."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        with self._lock:
            if state.sweeper is not None:
                return

            def sweep_once() -> int:
                with app.app_context():
                    return self.close_expired_sessions()

            state.sweeper = threading.Thread(
                target=sweep_forever,
                args=(sweep_once, state.sweep_interval, state.sweeper_stop),
                name="tutor-times-sweeper",
                daemon=True,
            )
            state.sweeper.start()
