"""What the extension holds for one app, and how it is wired from the app's settings."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..core import privacy
from ..store import drivers
from ..store.idempotency import IdempotencyKeys
from ..store.models import Models
from ..store.redis_cache import CircuitBreaker, RedisClient, RedisStore, redis_client
from ..store.sql_store import SqlStore
from ..tracking.tracker import Tracker
from .settings import Settings

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from ..closing.worker import Worker


@dataclass
class AppState:
    """One app's tracker, stores and threads, built once by ``init_app``."""

    settings: Settings
    tracker: Tracker
    #: the first answers of requests that carried an idempotency key
    idempotency: IdempotencyKeys
    #: the in-process fakeredis: no other process can see it, nor listen to it
    embedded: bool
    #: whether this process runs a sweeper thread of its own
    in_process_sweeper: bool
    #: the host's SQLALCHEMY_ENGINE_OPTIONS, for the tracking engine
    engine_options: dict[str, Any]
    #: the tracking engine, made on first use (see drivers.own_engine)
    engine: sa.Engine | None = None
    #: its twin in autocommit mode, for the hot path's single INSERT
    autocommit_engine: sa.Engine | None = None
    #: the engines reports read with, by the engine they read from (see reports_engine)
    reports_engines: dict[sa.Engine, sa.Engine] = field(default_factory=dict)
    #: the tracked views of this app have been checked against its routes
    routes_checked: bool = False
    #: the in-process sweeper, once started
    sweeper: Worker | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def redis(self) -> RedisClient | None:
        store = self.tracker.redis
        return store.client if store is not None else None

    @property
    def timeout(self) -> timedelta:
        return self.settings.timeout

    @property
    def min_minutes(self) -> int:
        return self.settings.min_minutes

    def tracking_engine(self, host: sa.Engine, *, autocommit: bool = False) -> sa.Engine:
        """The engine tracking writes with (or its autocommit twin), made on first use."""
        engine = self.autocommit_engine if autocommit else self.engine
        if engine is None:
            with self.lock:
                engine = self.autocommit_engine if autocommit else self.engine
                if engine is None:
                    engine = drivers.own_engine(
                        host,
                        timeout=self.settings.sql_timeout,
                        pool_size=self.settings.sql_pool_size,
                        options=self.engine_options,
                        autocommit=autocommit,
                    )
                    if autocommit:
                        self.autocommit_engine = engine
                    else:
                        self.engine = engine
        return engine

    def reports_engine(self, source: sa.Engine) -> sa.Engine:
        """The engine reports read ``source``'s database with (the host's engine, or its
        replica's), made on first use: a pool of its own, as tracking has, so that a report
        never takes a connection the host's views need, and so that its connections keep
        their prepared statements (psycopg forgets them at every rollback, and the host's
        sessions end in one) — a report's statements are then parsed once per connection,
        not on every request, and planned for each run. Each statement may run for
        TUTOR_TIMES_REPORT_TIMEOUT (PostgreSQL's ``statement_timeout``, a deadline on SQLite;
        the report is then a 503). No JIT on PostgreSQL, room to group in
        memory, and each run planned for its own range
        (:data:`~tutor_times.store.drivers.REPORTS_SETTINGS`). One snapshot per read on
        PostgreSQL: a report's statements (the figures and the split of their blocks) see the
        same sessions."""
        engine = self.reports_engines.get(source)
        if engine is None:
            with self.lock:
                engine = self.reports_engines.get(source)
                if engine is None:
                    engine = drivers.own_engine(
                        source,
                        timeout=None,
                        pool_size=self.settings.sql_pool_size,
                        options=self.engine_options,
                        pre_ping=True,
                        settings=drivers.REPORTS_SETTINGS,
                        snapshot=True,
                        statement_timeout=self.settings.report_timeout,
                    )
                    self.reports_engines[source] = engine
        return engine

    def dispose(self, host: sa.Engine) -> None:
        with self.lock:
            engines = (self.engine, self.autocommit_engine, *self.reports_engines.values())
            self.engine = self.autocommit_engine = None
            self.reports_engines = {}
        for engine in engines:
            if engine is not None and engine.pool is not host.pool:
                engine.dispose()


def _session_cache(settings: Settings, override: RedisClient | None) -> RedisStore | None:
    """The Redis session cache of the Redis store; None for the SQL-only store."""
    if settings.store != "redis":
        return None
    client = redis_client(
        settings.redis_url, settings.redis_options, override, cluster=settings.redis_cluster
    )
    return RedisStore(
        client,
        prefix=settings.redis_prefix,
        timeout=settings.timeout,
        # the key expires when the sweep may close its session: its expiry event closes it
        ttl=settings.closing_delay,
        breaker=CircuitBreaker(settings.redis_retry_after),
    )


def build_state(
    settings: Settings,
    *,
    db: SQLAlchemy,
    models: Models,
    clock: Callable[[], datetime],
    redis_client_override: RedisClient | None,
    engine_options: dict[str, Any],
) -> AppState:
    """Wire the tracker and its stores for one app."""
    embedded = (
        settings.store == "redis" and not settings.redis_url and redis_client_override is None
    )
    in_process = settings.in_process_sweeper
    if in_process is None:
        in_process = embedded
    state: AppState
    sql = SqlStore(
        models,
        lambda: state.tracking_engine(db.engine),
        autocommit=lambda: state.tracking_engine(db.engine, autocommit=True),
        timeout=settings.timeout,
        min_minutes=settings.min_minutes,
        maintenance=lambda: db.engine,
    )
    tracker = Tracker(
        actions=settings.actions,
        sql=sql,
        redis_store=_session_cache(settings, redis_client_override),
        clock=clock,
        max_skew=settings.max_skew,
        max_backdate=settings.max_backdate,
        ip_policy=privacy.ip_policy(settings.ip_storage, settings.ip_hash_key),
    )
    state = AppState(
        settings=settings,
        tracker=tracker,
        idempotency=IdempotencyKeys(
            models.IdempotencyKeys,
            lambda: state.tracking_engine(db.engine),
            clock=clock,
            ttl=settings.operations.idempotency_ttl,
        ),
        embedded=embedded,
        in_process_sweeper=bool(in_process),
        engine_options=engine_options,
    )
    return state
