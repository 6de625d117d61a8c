"""The ``TutorTimes`` Flask extension."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import redis
import sqlalchemy as sa
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy

from . import drivers, privacy
from .accounting import UTC, utcnow
from .activity import check_action
from .closer import ExpiryListener, oldest_unclosed, sweep, sweep_forever
from .constants import DEFAULTS, TRACKED_ROLES
from .decorator import IdSpec, TrackSpec, check_routes, track_view
from .errors import ConfigurationError, InvalidActivityError
from .models import CLIENT, SERVER, Models, build_models
from .redis_cache import CircuitBreaker, RedisStore, redis_client
from .settings import Settings
from .sql_store import SqlStore
from .tracker import Tracker

F = TypeVar("F", bound=Callable[..., Any])
RoleLoader = Callable[[Any, Any], "str | None"]
#: (unit_id, project_id, task_id, task_definition_id) -> whether they are that unit's
TargetLoader = Callable[[int, "int | None", "int | None", "int | None"], bool]

EXTENSION_KEY = "tutor_times"
logger = logging.getLogger("tutor_times")


def _utc(t: datetime, name: str) -> datetime:
    """An aware datetime in UTC; a naive one is refused (it would be read as local time)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return t.astimezone(UTC)


@dataclass
class _State:
    """What the extension holds for one app."""

    owner: TutorTimes
    settings: Settings
    tracker: Tracker
    #: the in-process fakeredis: no other process can see it, nor listen to it
    embedded: bool
    in_process_sweeper: bool
    #: the tracking engine, made on first use (see drivers.tracking_engine)
    engine: sa.Engine | None = None
    #: the tracked views of this app have been checked against its routes
    routes_checked: bool = False
    sweeper: threading.Thread | None = None
    sweeper_stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def timeout(self) -> timedelta:
        return self.settings.timeout

    @property
    def min_minutes(self) -> int:
        return self.settings.min_minutes

    @property
    def sweep_batch_size(self) -> int:
        return self.settings.sweep_batch_size

    @property
    def sweep_interval(self) -> float:
        return self.settings.sweep_interval

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
        self._target_loader: TargetLoader | None = None
        #: every @track applied with this extension, checked against each app's actions
        self._specs: list[TrackSpec] = []
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
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
        settings = Settings.from_config(app.config)
        for spec in self._specs:  # decorated before this app was known
            check_action(spec.action, settings.actions)
        state = self._build_state(settings)
        app.extensions[EXTENSION_KEY] = state
        self._apps.add(app)

        from .cli import cli
        from .views import bp

        app.cli.add_command(cli)
        app.register_blueprint(bp, url_prefix=settings.url_prefix)
        app.before_request(self._check_routes_once)

    def _build_state(self, settings: Settings) -> _State:
        embedded = settings.store == "redis" and not settings.redis_url and self._redis is None
        in_process = settings.in_process_sweeper
        if in_process is None:
            in_process = embedded
        state: _State
        sql = SqlStore(
            self.models,
            lambda: self._tracking_engine(state),
            timeout=settings.timeout,
            min_minutes=settings.min_minutes,
            maintenance=lambda: self.db.engine,
        )
        redis_store = None
        if settings.store == "redis":
            client = redis_client(settings.redis_url, settings.redis_options, self._redis)
            redis_store = RedisStore(
                client,
                prefix=settings.redis_prefix,
                timeout=settings.timeout,
                # the key expires when the sweep may close its session: its expiry event
                # closes it then
                ttl=settings.closing_delay,
                breaker=CircuitBreaker(settings.redis_retry_after),
            )
        tracker = Tracker(
            actions=settings.actions,
            sql=sql,
            redis_store=redis_store,
            # Looked up on each call, so a test can swap the clock of a running app.
            clock=lambda: self.clock(),
            max_skew=settings.max_skew,
            max_backdate=settings.max_backdate,
            ip_policy=privacy.ip_policy(settings.ip_storage, settings.ip_hash_key),
        )
        state = _State(
            owner=self,
            settings=settings,
            tracker=tracker,
            embedded=embedded,
            in_process_sweeper=bool(in_process),
        )
        return state

    def _tracking_engine(self, state: _State) -> sa.Engine:
        """The engine tracking writes with, made once per app on first use."""
        engine = state.engine
        if engine is None:
            with state.lock:
                if state.engine is None:
                    state.engine = drivers.tracking_engine(
                        self.db.engine,
                        timeout=state.settings.sql_timeout,
                        pool_size=state.settings.sql_pool_size,
                        options=dict(current_app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {})),
                    )
                engine = state.engine
        return engine

    @property
    def tracking_engine(self) -> sa.Engine:
        """The current app's engine for tracking writes (the host's own when its database is
        in-memory SQLite)."""
        return self._tracking_engine(self.state)

    def dispose(self) -> None:
        """Close the current app's tracking connections (e.g. after a fork, or in tests);
        new ones are opened on next use."""
        state = self.state
        with state.lock:
            engine, state.engine = state.engine, None
        if engine is not None and engine is not self.db.engine:
            engine.dispose()

    def _check_routes_once(self) -> None:
        """On the app's first request, when every route exists: each @track's view-argument
        names must be arguments of its route, or the activity could never be recorded. And
        without a closer in this process, say so if sessions are left open long past idle."""
        state = self.state
        if not state.routes_checked:
            check_routes(current_app)
            state.routes_checked = True
            if not state.in_process_sweeper:
                self._warn_if_nothing_closes(state)

    def _warn_if_nothing_closes(self, state: _State) -> None:
        settings = state.settings
        grace = settings.closing_delay + timedelta(seconds=2 * settings.sweep_interval + 60)
        try:
            with state.tracker.sql.connect() as conn:
                since = oldest_unclosed(conn, self.models, cutoff=self.clock() - grace)
        except Exception:  # a check at start-up must never cost the request
            logger.debug("could not look for unclosed sessions", exc_info=True)
            return
        if since is not None:
            logger.warning(
                "a marking session idle since %s is still open: no worker or cron sweep seems"
                " to run, and this process closes none (TUTOR_TIMES_IN_PROCESS_SWEEPER is off)."
                " Run `flask tutor-times worker`, or `flask tutor-times sweep` from cron.",
                since.isoformat(),
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

    def target_loader(self, callback: TargetLoader) -> TargetLoader:
        """Register ``callback(unit_id, project_id, task_id, task_definition_id)`` -> whether
        every id given (the others are None) belongs to that unit.

        Only what a client reports itself (``POST /activities``) is checked this way (R11);
        without a loader, a client may report no project, task or task definition ids.
        """
        self._target_loader = callback
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

    def confirm_targets(
        self,
        unit_id: int,
        project_id: int | None,
        task_id: int | None,
        task_definition_id: int | None,
    ) -> None:
        """R11: the ids a client reports must be confirmed by the host as the unit's."""
        ids = {
            "project_id": project_id,
            "task_id": task_id,
            "task_definition_id": task_definition_id,
        }
        named = [name for name, value in ids.items() if value is not None]
        if not named:
            return
        if self._target_loader is None:
            raise InvalidActivityError(
                f"{named[0]}: this server cannot confirm ids (no target_loader is registered)",
                field=named[0],
            )
        if not self._target_loader(unit_id, project_id, task_id, task_definition_id):
            raise InvalidActivityError(
                f"{', '.join(named)}: not found in unit {unit_id}", field=named[0]
            )

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

        Each id is a view-argument name, a callable of the view's kwargs, or None; a
        view argument that is a decimal string (a route without ``int:``) is read as a
        number. ``when(kwargs)`` returning false skips tracking (e.g. a marker on their own
        project). The action is checked against every app this extension is registered on,
        now and at each later ``init_app``, so a typo fails at start-up.
        """
        for app in list(self._apps):
            check_action(action, app.extensions[EXTENSION_KEY].settings.actions)
        spec = TrackSpec(action, unit_id, project_id, task_id, task_definition_id, when)
        self._specs.append(spec)
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

        The trusted service API: the caller vouches for who acted (no role is checked, as
        the host calls it for its own users). ``at`` may lie at most TUTOR_TIMES_MAX_BACKDATE
        in the past. Raises :class:`InvalidActivityError` before writing anything when input
        is bad.
        """
        return self._record(
            action,
            source=SERVER,
            marker_id=marker_id,
            unit_id=unit_id,
            ip_address=ip_address,
            project_id=project_id,
            task_id=task_id,
            task_definition_id=task_definition_id,
            at=at,
        )

    def record_client_activity(self, action: str, *, unit_id: int, **fields: Any) -> Any:
        """Record an activity a client reported itself (R11): only TUTOR_TIMES_CLIENT_ACTIONS,
        ids the host confirms as the unit's, marked ``source="client"``. The caller has
        checked that the marker is staff of the unit."""
        state = self.state
        client_actions = state.settings.client_actions
        if action not in client_actions:
            allowed = ", ".join(sorted(client_actions)) or "none"
            raise InvalidActivityError(
                f"action {action!r} cannot be reported by a client; allowed: {allowed}",
                field="action",
            )
        self.confirm_targets(
            unit_id,
            fields.get("project_id"),
            fields.get("task_id"),
            fields.get("task_definition_id"),
        )
        return self._record(action, source=CLIENT, unit_id=unit_id, **fields)

    def _record(self, action: str, *, source: str, **fields: Any) -> Any:
        state = self.state
        if state.in_process_sweeper and state.sweeper is None:
            self._start_sweeper(state)
        tracker = state.tracker
        activity = tracker.validate(action, source=source, **fields)
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
        """Close one key's open session if it is idle at ``now`` (1), else leave it (0).

        Idle means no activity for the timeout plus TUTOR_TIMES_MAX_BACKDATE: an activity
        that arrives late may still belong to the session until then (R6)."""
        return self._sweep(now, key=(marker_id, unit_id, ip_address))

    def close_expired_sessions(self, now: datetime | None = None) -> int:
        """Close every session idle at ``now`` — no activity for the timeout plus
        TUTOR_TIMES_MAX_BACKDATE (R6) — at its last activity; returns how many were closed."""
        return self._sweep(now)

    def _sweep(self, now: datetime | None, key: tuple[int, int, str] | None = None) -> int:
        state = self.state
        return sweep(
            state.tracker.sql.connect,
            self.models,
            now=self.clock() if now is None else _utc(now, "now"),
            timeout=state.settings.closing_delay,
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
