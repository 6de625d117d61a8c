"""Fixtures: the demo LMS on each backend, a clock tests can move, real-service gating.

Backends: ``sqlite`` (a SQLite file + the embedded fakeredis) is always run; ``postgres``
(PostgreSQL + the real Redis) is marked ``real``. Outside CI a missing server skips the
real tests with a reason; with CI=true it fails them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from demo import create_app
from demo.extensions import db, tutor_times
from demo.scenario import NOW as NOW
from demo.scenario import SCENARIO as SCENARIO
from demo.scenario import D as D
from demo.scenario import add_second_unit, play
from demo.scenario import at as at
from demo.seed import seed
from tutor_times.store import rollups, tallies
from tutor_times.store.redis_cache import RedisClient, RedisStore

PG_URL = os.environ.get(
    "TUTOR_TIMES_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TUTOR_TIMES_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: the pytest-xdist worker running this process (``make test-fast`` runs one per core), or ""
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _worker_urls(pg_url: str, redis_url: str, worker: str) -> tuple[str, str]:
    """A database and a Redis db of each worker's own: the tests empty the tables they use and
    read back what they wrote, so two workers must never share them."""
    n = int(worker.removeprefix("gw"))
    pg = sa.make_url(pg_url)
    pg = pg.set(database=f"{pg.database}_{worker}")
    rd = redis.connection.parse_url(redis_url)
    db = (int(rd.get("db", 0)) + n) % 16
    return pg.render_as_string(hide_password=False), redis_url.rsplit("/", 1)[0] + f"/{db}"


BASE_PG_URL = PG_URL
if WORKER:
    PG_URL, REDIS_URL = _worker_urls(PG_URL, REDIS_URL, WORKER)
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
        if WORKER:
            _create_worker_database()
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


def _create_worker_database() -> None:
    """This worker's database, made beside the configured one the first time it is asked."""
    name = sa.make_url(PG_URL).database
    try:
        admin = sa.create_engine(BASE_PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            known = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if not known:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except sa.exc.SQLAlchemyError:
        pass  # the check that follows names what is wrong


#: fixtures that start servers of the test's own: a test that takes one (test_cluster.py runs
#: the tracker's rule tests on its cluster) is a ``system`` test wherever it was written
SYSTEM_FIXTURES = frozenset({"cluster", "own_cluster"})
#: every test in tests/system is a ``system`` test, whatever its file marks
SYSTEM_FOLDER = Path(__file__).resolve().parent / "system"


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        in_folder = SYSTEM_FOLDER in Path(str(item.path)).resolve().parents
        if in_folder or SYSTEM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.system)


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
def _sqlite_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # in memory where the machine has a tmpfs: each test's app commits its tables empty twice,
    # and a commit's fsync on disk is most of what an app of the fast loop costs
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        folder = tempfile.mkdtemp(prefix="tutor-times-tests-", dir="/dev/shm")
        _sqlite_dir.append(Path(folder))
        yield
        shutil.rmtree(folder, ignore_errors=True)
    else:
        _sqlite_dir.append(tmp_path_factory.mktemp("db"))
        yield


def make_app(backend: str, **config: Any) -> Flask:
    if backend in DRIVERS:
        require_real_services()
        config.setdefault("TUTOR_TIMES_REDIS_URL", REDIS_URL)
    config.setdefault("TUTOR_TIMES_REDIS_PREFIX", f"tt-test-{uuid.uuid4().hex[:12]}")
    config.setdefault("SQLALCHEMY_DATABASE_URI", database_url(backend))
    return create_app("testing", **config)


def redis_of(app: Flask) -> RedisClient:
    """The app's Redis client (a test of the Redis store: there is one)."""
    client = tutor_times.state_of(app).redis
    assert client is not None
    return client


def cache_of(app: Flask) -> RedisStore:
    """The app's Redis session cache."""
    cache = tutor_times.state_of(app).tracker.redis
    assert cache is not None
    return cache


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
        db.session.execute(tutor_times.models.IdempotencyKeys.delete())
        db.session.execute(tutor_times.models.Jobs.delete())
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
        # the default bind only: an app may also bind a read-only replica (test_replica)
        db.drop_all(bind_key=None)
        db.create_all(bind_key=None)
        seed()
        add_second_unit()
        db.engine.dispose()
    _prepared.add(url)


def emptied(app: Flask) -> Iterator[Flask]:
    """``app`` with its tracking tables empty, emptied again and its connections closed after."""
    reset_tables(app)
    try:
        yield app
    finally:
        reset_tables(app)
        with app.app_context():
            tutor_times.dispose()
            db.session.remove()
            db.engine.dispose()


def build(backend: str, **config: Any) -> Iterator[Flask]:
    """A fresh app on a prepared database whose tracking tables are empty."""
    app = make_app(backend, **config)
    prepare_schema(app)
    yield from emptied(app)


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


#: a task of student1's project (project 1, user 5) in unit 1, as the demo seeds it
TASK = "/units/1/projects/1/tasks/1"


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[int]:
    """The app on a loopback port, one thread per request, as a threaded server runs it;
    stopped on leaving."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(timeout=10)


def login(app: Flask, username: str) -> FlaskClient:
    """A test client logged in as one of the demo's users (password "password")."""
    client = app.test_client()
    r = client.post("/login", json={"username": username, "password": "password"})
    assert r.status_code == 200, r.get_json()
    return client


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


# -- the golden scenario of the report tests: demo/scenario.py ------------------------------


@pytest.fixture
def scenario(app: Flask, clock: Clock) -> Flask:
    return play_scenario(app, clock)


def play_scenario(app: Flask, clock: Clock) -> Flask:
    """Record SCENARIO's activities at their times, then close what is idle at NOW."""
    with app.app_context():
        play(clock.set)
    return app


def tally_tables(models: Any) -> tuple[sa.Table, ...]:
    """The tables the triggers on ``marking_sessions`` keep (PostgreSQL)."""
    return (
        models.Assessed,
        models.AssessedKeys,
        models.AssessedDays,
        models.TutorMonths,
        models.AssessedMonths,
        models.AssessedTotals,
    )


def check_tallies(conn: sa.Connection, models: Any) -> None:
    """The tallies kept statement by statement are those filled from scratch from the
    sessions as they are now; a key's widest gap may be wider (an upper bound)."""
    if conn.dialect.name != "postgresql":
        return
    tables = tally_tables(models)

    def read() -> list[list[tuple[Any, ...]]]:
        return [[tuple(r) for r in conn.execute(sa.select(t).order_by(*t.c))] for t in tables]

    kept = read()
    with conn.begin_nested() if conn.in_transaction() else conn.begin() as tx:
        for t in tables:
            conn.execute(t.delete())
        for statement in tallies.FILL + rollups.FILL:
            conn.execute(sa.text(statement))
        fresh = read()
        tx.rollback()
    assert kept[0] == fresh[0]
    assert kept[2] == fresh[2]
    assert [k[:6] for k in kept[1]] == [k[:6] for k in fresh[1]]
    assert all(k[6] >= f[6] for k, f in zip(kept[1], fresh[1], strict=True))
    # the summary's months: each block's length an upper bound, the rest exact
    assert [k[:-1] for k in kept[3]] == [f[:-1] for f in fresh[3]]
    assert all(
        f[-1] is None or (k[-1] is not None and k[-1] >= f[-1])
        for k, f in zip(kept[3], fresh[3], strict=True)
    )
    # the tasks report's months; each unit's number of keys (a count gone to none stays)
    assert kept[4] == fresh[4]
    assert [k for k in kept[5] if k[-1]] == fresh[5]
    # every month of the summary's roll-up has a version (kept with it, never filled)
    months, versions = models.TutorMonths.c, models.MonthVersions.c
    unversioned = conn.execute(
        sa.select(months.unit_id, months.month).except_(sa.select(versions.unit_id, versions.month))
    ).all()
    assert unversioned == []
