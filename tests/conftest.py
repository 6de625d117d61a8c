"""Fixtures: the demo LMS on each backend, a clock tests can move, real-service gating.

Backends: ``sqlite`` (a SQLite file + the embedded fakeredis) is always run; ``postgres``
(PostgreSQL + the real Redis) is marked ``real``. Outside CI a missing server skips the
real tests with a reason; with CI=true it fails them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from demo import create_app
from demo.extensions import db, tutor_times
from demo.models import Unit, UnitRole, User
from demo.seed import seed

PG_URL = os.environ.get(
    "TUTOR_TIMES_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TUTOR_TIMES_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


class Clock:
    """A clock that only moves when told to."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now

    def set(self, now: datetime) -> datetime:
        self.now = now
        return now


_unreachable: dict[str, str | None] = {}


def require_real_services() -> None:
    """Skip (or, under CI, fail) when PostgreSQL or Redis does not answer."""
    if "checked" not in _unreachable:
        problems = []
        try:
            engine = sa.create_engine(PG_URL)
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            engine.dispose()
        except Exception as exc:  # any failure to reach it
            problems.append(f"PostgreSQL at {PG_URL}: {exc}")
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        except Exception as exc:
            problems.append(f"Redis at {REDIS_URL}: {exc}")
        _unreachable["checked"] = "; ".join(problems) or None
    problem = _unreachable["checked"]
    if problem:
        if IN_CI:
            pytest.fail(f"real-service tests cannot run under CI: {problem}", pytrace=False)
        pytest.skip(f"real services unavailable: {problem}")


BACKENDS = [
    pytest.param("sqlite", id="sqlite+fakeredis"),
    pytest.param("postgres", id="postgres+redis", marks=pytest.mark.real),
]
#: the same PostgreSQL database through each supported driver (the rule tests run on each)
DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgres-psycopg2": "postgresql+psycopg2",
    # what a bare postgresql:// means under SQLAlchemy 2: psycopg2
    "postgres-default": "postgresql",
}
EVERY_DRIVER = [
    *BACKENDS,
    pytest.param("postgres-psycopg2", id="psycopg2+redis", marks=pytest.mark.real),
    pytest.param("postgres-default", id="postgresql-url+redis", marks=pytest.mark.real),
]
STORES = ["redis", "sql"]


_sqlite_dir: list[Any] = []


def database_url(backend: str) -> str:
    if backend in DRIVERS:
        return sa.make_url(PG_URL).set(drivername=DRIVERS[backend]).render_as_string(False)
    return f"sqlite:///{_sqlite_dir[0] / 'test.sqlite'}"


@pytest.fixture(autouse=True)
def _our_logger_enabled() -> None:
    """Alembic's fileConfig (run by the migration tests) disables every logger it does not
    name, ours included; later tests read what we log."""
    logging.getLogger("tutor_times").disabled = False


@pytest.fixture(scope="session", autouse=True)
def _sqlite_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    _sqlite_dir.append(tmp_path_factory.mktemp("db"))


def make_app(backend: str, **config: Any) -> Flask:
    if backend in DRIVERS:
        require_real_services()
        config.setdefault("TUTOR_TIMES_REDIS_URL", REDIS_URL)
    config.setdefault("TUTOR_TIMES_REDIS_PREFIX", f"tt-test-{uuid.uuid4().hex[:12]}")
    config.setdefault("SQLALCHEMY_DATABASE_URI", database_url(backend))
    return create_app("testing", **config)


def reset_redis(app: Flask) -> None:
    """Forget every key of this app's prefix."""
    client = tutor_times.state_of(app).redis
    if client is None:
        return
    prefix = app.config["TUTOR_TIMES_REDIS_PREFIX"]
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    except redis.RedisError:
        return  # a test's deliberately unreachable Redis holds nothing
    if keys:
        client.delete(*keys)


def reset_tables(app: Flask) -> None:
    with app.app_context():
        db.session.execute(tutor_times.SessionActivity.__table__.delete())
        db.session.execute(tutor_times.MarkingSession.__table__.delete())
        db.session.commit()
    reset_redis(app)


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock()
    previous = tutor_times.clock
    tutor_times.clock = c
    yield c
    tutor_times.clock = previous


_prepared: set[str] = set()


def prepare_schema(app: Flask) -> None:
    """Create the schema and the demo data once per database and run."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if url in _prepared:
        return
    with app.app_context():
        db.drop_all()
        db.create_all()
        seed()
        db.session.add(Unit(id=2, code="COS20007", name="Object Oriented Programming"))
        # a tutor of unit 2 only, to knock on unit 1's door
        other = User(username="tutor9", name="Otto Other")
        other.set_password("password")
        db.session.add(other)
        db.session.flush()
        db.session.add(UnitRole(user_id=other.id, unit_id=2, role="tutor"))
        db.session.commit()
        db.engine.dispose()
    _prepared.add(url)


def build(backend: str, **config: Any) -> Iterator[Flask]:
    """A fresh app on a prepared database whose tracking tables are empty."""
    app = make_app(backend, **config)
    prepare_schema(app)
    reset_tables(app)
    try:
        yield app
    finally:
        reset_tables(app)
        with app.app_context():
            tutor_times.dispose()
            db.session.remove()
            db.engine.dispose()


built = contextlib.contextmanager(build)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app(backend: str, store: str, clock: Clock) -> Iterator[Flask]:
    yield from build(backend, TUTOR_TIMES_STORE=store)


@pytest.fixture
def ctx(app: Flask) -> Iterator[Flask]:
    with app.app_context():
        yield app


def stored(app: Flask, model: Any, *options: Any) -> list[Any]:
    """Every row of ``model`` by id, detached, with ``options`` (eager loads) applied."""
    with app.app_context():
        rows = db.session.scalars(sa.select(model).options(*options).order_by(model.id)).all()
        db.session.expunge_all()
        db.session.commit()
        return list(rows)


def sessions(app: Flask) -> list[Any]:
    return stored(app, tutor_times.MarkingSession)


def activities(app: Flask) -> list[Any]:
    return stored(app, tutor_times.SessionActivity)


# -- the golden scenario of the report tests --------------------------------------------------

D = datetime(2026, 3, 2, tzinfo=timezone.utc)


def at(day: int, hh: int, mm: int, ss: int = 0) -> datetime:
    return D + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


# (time, marker, unit, ip, action, task_id, task_definition_id)
SCENARIO = [
    # tutor 3, two IPs at once: 09:00-09:20 and 09:15-09:29 merge into 29 minutes (R10);
    # each gap is under the 15-minute timeout
    (at(0, 9, 0), 3, 1, "10.0.0.1", "assessing", 11, 1),
    (at(0, 9, 10), 3, 1, "10.0.0.1", "inbox", None, None),
    (at(0, 9, 20), 3, 1, "10.0.0.1", "assessing", 21, 2),
    (at(0, 9, 15), 3, 1, "10.0.0.2", "assessing", 11, 1),
    (at(0, 9, 29), 3, 1, "10.0.0.2", "add-comment", 11, 1),
    # tutor 3 in another unit at the same time: not this unit's time
    (at(0, 9, 5), 3, 2, "10.0.0.1", "assessing", 11, 1),
    # tutor 3 two days earlier: outside the range
    (at(-2, 9, 0), 3, 1, "10.0.0.1", "assessing", 11, 1),
    # tutor 3 across midnight: 23:50-00:10, 20 minutes, 2 assessments
    (at(0, 23, 50), 3, 1, "10.0.0.1", "assessing", 12, 1),
    (at(1, 0, 2), 3, 1, "10.0.0.1", "add-comment", 12, 1),
    (at(1, 0, 10), 3, 1, "10.0.0.1", "assessing", 13, 1),
    # tutor 4: a single look at the inbox (1 minute, the minimum) ...
    (at(0, 10, 0), 4, 1, "10.0.0.3", "inbox", None, None),
    # ... and a session still open: 7.5 minutes so far, 2 assessments of one task
    (at(1, 0, 20), 4, 1, "10.0.0.3", "assessing", 22, 2),
    (at(1, 0, 27, 30), 4, 1, "10.0.0.3", "assessing", 22, 2),
]
NOW = at(1, 0, 28)


@pytest.fixture
def scenario(app: Flask, clock: Clock) -> Flask:
    return play_scenario(app, clock)


def play_scenario(app: Flask, clock: Clock) -> Flask:
    """Record SCENARIO's activities at their times, then close what is idle at NOW."""
    with app.app_context():
        for t, marker, unit, ip, action, task, definition in sorted(SCENARIO, key=lambda a: a[0]):
            clock.set(t)
            tutor_times.record_activity(
                action,
                marker_id=marker,
                unit_id=unit,
                ip_address=ip,
                task_id=task,
                task_definition_id=definition,
            )
        clock.set(NOW)
        tutor_times.close_expired_sessions()
    return app
