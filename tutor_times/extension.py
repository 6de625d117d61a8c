"""The ``TutorTimes`` Flask extension: the facade a host uses.

``app.extensions["tutor_times"]`` holds the extension itself; what it keeps for each app
(settings, tracker, stores, threads) is an :class:`~tutor_times.app.state.AppState`, reached by
:meth:`TutorTimes.state_of` or, inside an app context, :attr:`TutorTimes.state`. What the
facade does beyond registering and decorating is :class:`~tutor_times.app.services.Services`,
which the web layer, the CLI and the worker reach by ``services()``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import redis
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from redis.cluster import RedisCluster

from .app.cli import cli
from .app.services import EXTENSION_KEY, Services
from .app.settings import Settings
from .app.state import build_state
from .core.accounting import utcnow
from .core.constants import DEFAULTS
from .core.errors import ConfigurationError
from .store.activity import check_action
from .store.models import build_models
from .tracking.decorator import IdSpec, TrackSpec, track_view
from .web import bp

F = TypeVar("F", bound=Callable[..., Any])


class TutorTimes(Services):
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
        if not isinstance(db, SQLAlchemy):
            raise ConfigurationError(
                "TutorTimes needs the host's Flask-SQLAlchemy instance: TutorTimes(app, db=db)"
            )
        models = build_models(db, user_fk=user_fk, unit_fk=unit_fk)
        super().__init__(db=db, models=models, clock=clock or utcnow, redis=redis)
        self.MarkingSession = self.models.MarkingSession
        self.SessionActivity = self.models.SessionActivity
        #: every @track applied with this extension, checked against each app's actions
        self._specs: list[TrackSpec] = []
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
        app.cli.add_command(cli)
        app.register_blueprint(bp, url_prefix=settings.url_prefix)
        app.before_request(self._on_first_request)

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
