"""What the web layer, the CLI and the worker call: each app's typed state and the services
the extension gives them, apart from the facade a host holds.

:class:`Services` keeps the extension's database, models, clock and each app's
:class:`~tutor_times.app.state.AppState`; it records activities, reads through the host's
hooks (:class:`~tutor_times.app.hooks.HostHooks`) and runs the maintenance
(:class:`~tutor_times.app.maintenance.Maintenance`). The facade,
:class:`~tutor_times.TutorTimes`, is a ``Services`` that also registers itself on an app and
decorates the host's views. ``services()`` is the one way in from a request or a command.
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

from ..core import metrics
from ..core.errors import ConfigurationError
from ..store import drivers
from ..store.models import CLIENT, SERVER, Models
from .hooks import HostHooks
from .maintenance import Maintenance
from .state import AppState

T = TypeVar("T")

#: where ``init_app`` keeps the extension in ``app.extensions``
EXTENSION_KEY = "tutor_times"
logger = logging.getLogger("tutor_times")


def services() -> Services:
    """The services of the extension registered on the current app."""
    ext = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(ext, Services):
        raise ConfigurationError(
            "TutorTimes is not registered on this app: did you forget tutor_times.init_app(app)?"
        )
    return ext


class Services(HostHooks, Maintenance):
    """The extension's database, models and clock, each app's state, and what is done with
    them: recording, the host's hooks, closing and maintenance."""

    def __init__(
        self,
        *,
        db: SQLAlchemy,
        models: Models,
        clock: Callable[[], datetime],
        redis: redis.Redis | RedisCluster | None,
    ) -> None:
        super().__init__()
        self.db = db
        self.models = models
        self.clock = clock
        self._redis = redis
        self._states: weakref.WeakKeyDictionary[Flask, AppState] = weakref.WeakKeyDictionary()
        self._failures = 0
        self._lock = threading.Lock()

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
