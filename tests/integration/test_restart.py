"""A database restart, for real: every backend of the app's database terminated
(``pg_terminate_backend``), between requests and in the middle of one. No tracked activity
is lost or stored twice, POST /activities answers 201 or 503 (never 500) and its retries
store once, and the reports answer 2xx or 503.

Each test runs on a PostgreSQL database of its own module (created next to the configured
test database and dropped afterwards): terminating every backend of it touches nothing else.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from demo import create_app
from demo.extensions import db, tutor_times
from demo.seed import seed
from tutor_times.store import drivers, idempotency
from tutor_times.web.activities import report_activity

from ..conftest import REDIS_URL, STORES, TASK, Clock, activities, emptied, login
from ..databases import scratch_database

pytestmark = pytest.mark.real

P = "/tutor-times"


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scratch_database("postgres", tmp_path_factory.mktemp("restart"), "restart") as url:
        app = create_app("testing", SQLALCHEMY_DATABASE_URI=url, TUTOR_TIMES_STORE="sql")
        with app.app_context():
            db.create_all()
            seed()
            db.engine.dispose()
        yield url


def make(url: str, store: str, **config: Any) -> Flask:
    given: dict[str, Any] = {
        "SQLALCHEMY_DATABASE_URI": url,
        "TUTOR_TIMES_STORE": store,
        "TUTOR_TIMES_REDIS_URL": REDIS_URL,
        "TUTOR_TIMES_REDIS_PREFIX": f"tt-restart-{uuid.uuid4().hex[:12]}",
    }
    return create_app("testing", **{**given, **config})


@contextmanager
def demo(url: str, store: str, **config: Any) -> Iterator[Flask]:
    yield from emptied(make(url, store, **config))


@pytest.fixture(params=STORES)
def app(request: pytest.FixtureRequest, database_url: str) -> Iterator[Flask]:
    with demo(database_url, str(request.param)) as app:
        yield app


def terminate_every_backend(url: str) -> int:
    """What a database restart does to every client: each backend of the database is
    terminated (as ``pg_terminate_backend`` does), idle or busy. How many there were."""
    killer = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with killer.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )
    finally:
        killer.dispose()


@contextmanager
def terminated_before(
    engine: sa.Engine, url: str, wanted: Callable[[str], bool], *, nth: int = 1, times: int = 1
) -> Iterator[list[str]]:
    """Every backend of the database is terminated just before ``engine`` sends the
    ``nth`` statement ``wanted`` picks (and the ``times - 1`` such statements after it): a
    restart in the middle of a request. The statements killed so are listed."""
    seen: list[str] = []
    met: list[str] = []

    def kill(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not wanted(statement):
            return
        seen.append(statement)
        if nth <= len(seen) < nth + times:
            met.append(statement)
            terminate_every_backend(url)

    sa.event.listen(engine, "before_cursor_execute", kill)
    try:
        yield met
    finally:
        sa.event.remove(engine, "before_cursor_execute", kill)


def put(client: Any, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return client.put(TASK, json={"status": "complete"}, headers=headers)


# -- item 1: a restart between requests ---------------------------------------------------


def test_after_a_restart_every_tracked_request_is_recorded(app: Flask, database_url: str) -> None:
    """Twenty tracked PUTs after every backend was terminated: twenty activities, none
    lost to a dead pooled connection of the tracking pools."""
    tutor = login(app, "tutor1")
    # several connections pooled in each of the tracking pools, as under load
    for _ in range(3):
        threads = [threading.Thread(target=put, args=(login(app, "tutor1"),)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    warm = len(activities(app))
    before = tutor_times.failures
    assert terminate_every_backend(database_url) >= 2
    for _ in range(20):
        assert put(tutor).status_code == 200
    assert tutor_times.failures == before
    assert len(activities(app)) == warm + 20


def test_after_a_restart_keyed_reports_are_stored_once(app: Flask, database_url: str) -> None:
    tutor = login(app, "tutor1")
    for _ in range(3):
        r = tutor.post(f"{P}/activities", json={"action": "inbox", "unit_id": 1})
        assert r.status_code == 201
    terminate_every_backend(database_url)
    for n in range(10):
        r = tutor.post(
            f"{P}/activities",
            json={"action": "inbox", "unit_id": 1},
            headers={"Idempotency-Key": f"after-{n}"},
        )
        assert r.status_code == 201, r.get_data(as_text=True)
    assert len(activities(app)) == 13


# -- item 1: a restart in the middle of a request ----------------------------------------


def test_a_restart_under_the_role_loader_of_a_report_is_no_500(
    app: Flask, database_url: str
) -> None:
    """The host's role_loader reads its database while POST /activities checks the user's
    role: a restart there is read again on a new connection, never a 500."""
    tutor = login(app, "tutor1")
    with app.app_context():
        host = db.engine
    with terminated_before(host, database_url, lambda sql: "unit_roles" in sql) as met:
        r = tutor.post(f"{P}/activities", json={"action": "inbox", "unit_id": 1})
    assert met, "the role was read"
    assert r.status_code == 201, r.get_data(as_text=True)
    assert len(activities(app)) == 1


def test_a_restart_under_a_tracked_views_callbacks_loses_nothing(
    app: Flask, database_url: str
) -> None:
    """The tracked PUT's ``when=`` reads the task's project after the view committed: the
    restart there costs a second read, not the assessment."""
    tutor = login(app, "tutor1")
    before = tutor_times.failures
    with app.app_context():
        host = db.engine
    # the view reads the project first; the tracker's when= reads it again after the commit
    wanted = lambda sql: sql.lstrip().startswith("SELECT") and "FROM projects" in sql  # noqa: E731
    with terminated_before(host, database_url, wanted, nth=2) as met:
        r = put(tutor)
    assert met, "the tracker read the project after the view"
    assert r.status_code == 200
    assert tutor_times.failures == before
    assert [a.action for a in activities(app)] == ["assessing"]


def reports_engine(app: Flask) -> sa.Engine:
    with app.app_context():
        return tutor_times.state.reports_engine(db.engine)


def anywhere(sql: str) -> bool:
    return True


def beside(sql: str) -> bool:
    """A statement of the dashboard's second connection, in its own thread."""
    return threading.current_thread().name.startswith("tutor-times-beside")


@pytest.mark.parametrize(
    ("path", "wanted", "nth"),
    [
        (f"{P}/units/1/active", anywhere, 1),
        (f"{P}/units/1/dashboard", anywhere, 1),
        (f"{P}/units/1/dashboard", anywhere, 4),
        (f"{P}/units/1/dashboard", beside, 1),
    ],
)
def test_a_restart_under_a_report_is_a_503_or_its_answer(
    app: Flask, database_url: str, path: str, wanted: Callable[[str], bool], nth: int
) -> None:
    """`/active` and the dashboard with every backend terminated before one of their
    statements (on the dashboard's own connection or its second): the report answers, or
    says 503 "try again" (JSON, or the dashboard's HTML page); never a 500."""
    convenor = login(app, "convenor")
    assert put(login(app, "tutor1")).status_code == 200
    engine = reports_engine(app)
    assert convenor.get(path).status_code == 200
    with terminated_before(engine, database_url, wanted, nth=nth) as met:
        r = convenor.get(path)
    assert met, "a statement of the report met the restart"
    assert r.status_code in (200, 503), (r.status_code, r.get_data(as_text=True))
    if r.status_code == 503:
        assert r.headers["Retry-After"] == "1"
        if path.endswith("dashboard"):
            assert r.mimetype == "text/html" and "try again" in r.get_data(as_text=True)
        else:
            assert "try again" in r.get_json()["error"]["message"]
    assert convenor.get(path).status_code == 200


@pytest.mark.parametrize("path", [f"{P}/units/1/active", f"{P}/units/1/dashboard"])
def test_a_restart_under_the_hosts_user_loader_is_a_503(
    app: Flask, database_url: str, path: str
) -> None:
    """The host's user loader (Flask-Login) reads the user as the report starts, and meets
    the restart: a 503, whose page does not read the user again through the broken
    session (the host's context processor would), and the next request is answered."""
    convenor = login(app, "convenor")
    with app.app_context():
        host = db.engine
    users = lambda sql: sql.lstrip().startswith("SELECT") and "FROM users" in sql  # noqa: E731
    with terminated_before(host, database_url, users) as met:
        r = convenor.get(path)
    assert met, "the user was read"
    assert r.status_code == 503, r.get_data(as_text=True)
    assert r.headers["Retry-After"] == "1"
    assert convenor.get(path).status_code == 200


# -- item 2: POST /activities and its Idempotency-Key under a restart ----------------------

KEYS = "tutor_times_idempotency_keys"
HEARTBEAT = {"action": "inbox", "unit_id": 1}


@pytest.fixture
def sql_app(database_url: str, clock: Clock) -> Iterator[Flask]:
    """The SQL store alone (keys do not depend on the store), on a clock the test moves."""
    with demo(database_url, "sql") as app:
        yield app


def tracking_engine(app: Flask) -> sa.Engine:
    with app.app_context():
        return tutor_times.tracking_engine


def keyed(client: Any, key: str) -> Any:
    return client.post(f"{P}/activities", json=HEARTBEAT, headers={"Idempotency-Key": key})


def test_a_restart_as_the_answer_is_kept_answers_201_and_a_retry_stores_nothing(
    sql_app: Flask, database_url: str
) -> None:
    """The activity is stored; every backend is terminated as its answer is kept for the
    key: the answer is still a 201 (never a 500 from the host session's teardown), it is
    kept for the key all the same, and the retry is answered with it, storing nothing."""
    tutor = login(sql_app, "tutor1")
    engine = tracking_engine(sql_app)
    with terminated_before(
        engine, database_url, lambda sql: sql.startswith(f"UPDATE {KEYS}")
    ) as met:
        first = keyed(tutor, "k-restart")
    assert met, "the answer was kept after the restart"
    assert first.status_code == 201, first.get_data(as_text=True)
    again = keyed(tutor, "k-restart")
    assert (again.status_code, again.get_data()) == (201, first.get_data())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(activities(sql_app)) == 1


def refuse_activities(app: Flask) -> Callable[[], None]:
    """The database refuses every new activity (a trigger); what lets them in again."""
    statements = [
        "CREATE OR REPLACE FUNCTION tt_refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
        "CREATE TRIGGER tt_refuse BEFORE INSERT ON session_activities"
        " FOR EACH ROW EXECUTE FUNCTION tt_refuse()",
    ]
    with app.app_context(), db.engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))

    def allow() -> None:
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER IF EXISTS tt_refuse ON session_activities"))
            conn.execute(sa.text("DROP FUNCTION IF EXISTS tt_refuse()"))

    return allow


def test_a_restart_as_a_failed_requests_key_is_released_frees_the_key(
    sql_app: Flask, database_url: str
) -> None:
    """The activity cannot be stored (503), and every backend is terminated as its key is
    released: the release is made on a new connection, the answer stays the 503 (never a
    500), and the retry stores the activity at once, rather than a 409 until the claim is
    abandoned."""
    tutor = login(sql_app, "tutor1")
    allow = refuse_activities(sql_app)
    try:
        engine = tracking_engine(sql_app)
        released = lambda sql: sql.startswith(f"DELETE FROM {KEYS}")  # noqa: E731
        with terminated_before(engine, database_url, released) as met:
            first = keyed(tutor, "k-release")
        assert met, "the key was released after the restart"
        assert first.status_code == 503, first.get_data(as_text=True)
    finally:
        allow()
    started = time.monotonic()
    again = keyed(tutor, "k-release")
    assert again.status_code == 201, again.get_data(as_text=True)
    assert time.monotonic() - started < idempotency.WAIT_S  # the key was free: no wait
    assert len(activities(sql_app)) == 1


@pytest.mark.slow
def test_a_key_that_cannot_be_released_is_held_as_documented(
    sql_app: Flask, database_url: str, clock: Clock
) -> None:
    """Every try of the release meets a restart: the answer is the request's own 503, and
    the key stays held, as documented, until ABANDONED_AFTER: a retry before is a 409 and
    stores nothing, a retry after stores the activity once."""
    tutor = login(sql_app, "tutor1")
    allow = refuse_activities(sql_app)
    try:
        engine = tracking_engine(sql_app)
        released = lambda sql: sql.startswith(f"DELETE FROM {KEYS}")  # noqa: E731
        with terminated_before(engine, database_url, released, times=10) as met:
            first = keyed(tutor, "k-held")
        assert len(met) == drivers.DISCONNECT_ATTEMPTS
        assert first.status_code == 503, first.get_data(as_text=True)
    finally:
        allow()
    assert keyed(tutor, "k-held").status_code == 409
    clock.advance(seconds=idempotency.ABANDONED_AFTER.total_seconds())
    assert keyed(tutor, "k-held").status_code == 201
    assert keyed(tutor, "k-held").status_code == 201
    assert len(activities(sql_app)) == 1
    doc = report_activity.__doc__ or ""
    assert "2 minutes" in doc and idempotency.ABANDONED_AFTER == timedelta(minutes=2)
