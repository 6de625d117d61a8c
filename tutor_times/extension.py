"""The ``TutorTimes`` Flask extension: the facade a host uses.

``app.extensions["tutor_times"]`` holds the extension itself; what it keeps for each app
(settings, tracker, stores, threads) is an :class:`~tutor_times.app.state.AppState`, reached by
:meth:`TutorTimes.state_of` or, inside an app context, :attr:`TutorTimes.state`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import redis
import sqlalchemy as sa
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from redis.cluster import RedisCluster

from .app.hooks import HostHooks
from .app.maintenance import Maintenance
from .app.settings import Settings
from .app.state import AppState, build_state
from .core import metrics
from .core.accounting import utcnow
from .core.constants import DEFAULTS
from .core.errors import ConfigurationError
from .store import drivers
from .store.activity import check_action
from .store.models import CLIENT, SERVER, Models, build_models
from .tracking.decorator import IdSpec, TrackSpec, track_view

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

EXTENSION_KEY = "tutor_times"
logger = logging.getLogger("tutor_times")


def current() -> TutorTimes:
    """The extension registered on the current app."""
    ext = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(ext, TutorTimes):
        raise ConfigurationError(
            "TutorTimes is not registered on this app: did you forget tutor_times.init_app(app)?"
        )
    return ext


class TutorTimes(HostHooks, Maintenance):
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
        db: SQLAlchemy,
        clock: Callable[[], datetime] | None = None,
        redis: redis.Redis | RedisCluster | None = None,
        user_fk: str | None = "users.id",
        unit_fk: str | None = "units.id",
    ) -> None:
        super().__init__()
        if not isinstance(db, SQLAlchemy):
            raise ConfigurationError(
                "TutorTimes needs the host's Flask-SQLAlchemy instance: TutorTimes(app, db=db)"
            )
        self.db = db
        self.models: Models = build_models(db, user_fk=user_fk, unit_fk=unit_fk)
        self.MarkingSession = self.models.MarkingSession
        self.SessionActivity = self.models.SessionActivity
        self.clock: Callable[[], datetime] = clock or utcnow
        self._redis = redis
        #: every @track applied with this extension, checked against each app's actions
        self._specs: list[TrackSpec] = []
        self._states: weakref.WeakKeyDictionary[Flask, AppState] = weakref.WeakKeyDictionary()
        self._failures = 0
        self._lock = threading.Lock()
        self.app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: read and check every ``TUTOR_TIMES_*`` setting (a wrong one
        raises :class:`~tutor_times.ConfigurationError` naming it), check the actions of every
        ``@track`` applied so far, and add the report endpoints under the URL prefix and the
        ``flask tutor-times`` commands. A second instance on the same app is refused."""
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
        self._states[app] = build_state(
            settings,
            db=self.db,
            models=self.models,
            # looked up on each call, so a test can swap the clock of a running app
            clock=lambda: self.clock(),
            redis_client_override=self._redis,
            engine_options=dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {})),
        )
        app.extensions[EXTENSION_KEY] = self

        from .app.cli import cli
        from .web import bp

        app.cli.add_command(cli)
        app.register_blueprint(bp, url_prefix=settings.url_prefix)
        app.before_request(self._on_first_request)

    def state_of(self, app: Flask) -> AppState:
        try:
            return self._states[app]
        except KeyError:
            raise ConfigurationError(
                "TutorTimes is not registered on this app: did you forget"
                " tutor_times.init_app(app)?"
            ) from None

    @property
    def state(self) -> AppState:
        """The current app's state."""
        return self.state_of(current_app._get_current_object())  # type: ignore[attr-defined]

    @property
    def tracking_engine(self) -> sa.Engine:
        """The engine tracking writes with (the host's own for in-memory SQLite)."""
        return self.state.tracking_engine(self.db.engine)

    @property
    def tracking_engines(self) -> tuple[sa.Engine, sa.Engine]:
        """The tracking engine and its autocommit twin (the hot path's INSERT)."""
        state, host = self.state, self.db.engine
        return state.tracking_engine(host), state.tracking_engine(host, autocommit=True)

    def dispose(self) -> None:
        """Close the current app's tracking and report connections (after a fork, or in tests)."""
        self.state.dispose(self.db.engine)

    # -- tracking --------------------------------------------------------------

    def track(
        self,
        action: str,
        *,
        unit_id: IdSpec,
        project_id: IdSpec = None,
        task_id: IdSpec = None,
        task_definition_id: IdSpec = None,
        when: Callable[[Any], Any] | None = None,
        idempotency_header: str | None = None,
    ) -> Callable[[F], F]:
        """Record ``action`` whenever the decorated view returns a response below 400.

        Each id is a view-argument name, a callable of the view's kwargs, or None; a view
        argument that is a decimal string (a route without ``int:``) is read as a number.
        ``when(kwargs)`` returning false skips tracking (e.g. a marker on their own project).
        The action is checked against every app this extension is registered on, now and
        at each later ``init_app``, so a typo fails at start-up.
        ``idempotency_header`` names a request header (e.g. "Idempotency-Key"): a request
        repeating a value the same user sent before with the same target (action, method
        and path) records nothing new. The same value with another target is no retry: it
        is recorded, and the client's mistake logged and counted
        (``tutor_times_idempotency_keys_reused``).
        """
        for state in list(self._states.values()):
            check_action(action, state.settings.actions)
        spec = TrackSpec(
            action, unit_id, project_id, task_id, task_definition_id, when, idempotency_header
        )
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

        The trusted service API: the host vouches for who acted, so no role is checked.
        ``at`` may lie at most TUTOR_TIMES_MAX_BACKDATE in the past. Raises
        :class:`InvalidActivityError` before writing anything when input is bad.
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
        """Record what a client reported itself (R11): only TUTOR_TIMES_CLIENT_ACTIONS, ids the
        host confirms as the unit's, marked ``source="client"``. The caller has checked that
        the marker is staff of the unit."""
        allowed = self.state.settings.client_actions
        self.host_read(lambda: self.check_client_report(action, unit_id, allowed, fields))
        return self._record(action, source=CLIENT, unit_id=unit_id, **fields)

    def _record(self, action: str, *, source: str, **fields: Any) -> Any:
        state = self.state
        if state.in_process_sweeper and state.sweeper is None:
            self._start_sweeper(state)
        activity = state.tracker.validate(action, source=source, **fields)
        return state.tracker.record(activity)

    def host_read(self, read: Callable[[], T]) -> T:
        """``read()``: the host's callbacks that read its database (its ``role_loader``, a
        tracked view's ``when=`` and ids, its ``target_loader``), tried once more when the
        database dropped the connection of the host's session (a restart). The session is
        rolled back first: its transaction went with its connection, and a session is
        unusable until then; the second try reads on a new connection.

        A transaction of the host's session that only this read began (the view had ended
        its own) is ended here: otherwise the host's teardown would end it, and a restart
        meanwhile would fail the host's answer there (a 500 after the view succeeded)."""
        session = self.db.session()
        began = not session.in_transaction()
        try:
            try:
                return read()
            except sa.exc.DBAPIError as exc:
                if not drivers.is_disconnect(exc):
                    raise
            session.rollback()
            return read()
        finally:
            if began and session.in_transaction():
                try:
                    session.rollback()
                except sa.exc.DBAPIError as exc:
                    if not drivers.is_disconnect(exc):
                        raise
                    logger.warning("the host's session could not be rolled back: %s", exc)

    def count_failure(self, kind: str = "request") -> None:
        """A tracking failure: ``request`` (a tracked view's activity was lost) or
        ``report`` (POST /activities could not store one)."""
        metrics.failed(kind)
        with self._lock:
            self._failures += 1

    @property
    def failures(self) -> int:
        """Tracked requests whose activity could not be recorded, since start."""
        return self._failures
