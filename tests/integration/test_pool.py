"""Tracking never waits for the host's connection pool, and never waits long for anything.

Each tracked request holds a connection of the host's pool (its user loader, its view) until
it ends; the activity is written after the view. Were it written on a second connection of
the same pool, N simultaneous requests would each hold one connection and wait for another:
with Flask-SQLAlchemy's default pool (5 + 10) sixteen requests stalled for the pool timeout,
and activities were lost. The tracker writes through a pool of its own, with bounded waits.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from flask import Flask

from demo.extensions import db, tutor_times

from ..conftest import activities, built, login, serving, sessions

INBOX = "/units/1/inbox"
SLOW = "/units/1/slow-inbox"


def add_slow_view(app: Flask) -> None:
    """A tracked view that reads through the host's session and then works a while, so
    every request holds its pooled connection when its activity is written."""
    from flask_login import login_required

    from demo.models import Task

    @app.get("/units/<int:unit_id>/slow-inbox")
    @login_required
    @tutor_times.track("inbox", unit_id="unit_id")
    def slow_inbox(unit_id: int) -> dict[str, int]:
        n = db.session.scalar(sa.select(sa.func.count()).select_from(Task))
        time.sleep(0.3)
        return {"tasks": int(n or 0)}


def simultaneous_gets(port: int, cookie: str, n: int) -> list[int]:
    """``n`` requests released at the same instant; their status codes."""
    barrier = threading.Barrier(n)

    def get(_: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        barrier.wait()
        conn.request("GET", SLOW, headers={"Cookie": f"session={cookie}"})
        status = conn.getresponse().status
        conn.close()
        return status

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(get, range(n)))


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.parametrize("n", [16, 64])
@pytest.mark.parametrize("store", ["redis", "sql"])
def test_simultaneous_tracked_requests_with_the_default_pool(store: str, n: int) -> None:
    # The host's pool keeps Flask-SQLAlchemy's defaults; only its wait is shortened, so a
    # deadlock shows as errors in seconds rather than as a 30-second stall.
    with built(
        "postgres",
        TUTOR_TIMES_STORE=store,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_timeout": 5},
    ) as app:
        add_slow_view(app)
        cookie = login(app, "tutor1").get_cookie("session")
        assert cookie is not None
        with app.app_context():
            pool = db.engine.pool
            assert isinstance(pool, sa.pool.QueuePool) and pool.size() == 5  # the default
        failures = tutor_times.failures
        with serving(app) as port:
            statuses = simultaneous_gets(port, cookie.value, n)
        assert tutor_times.failures == failures
        assert statuses == [200] * n
        assert len(activities(app)) == n  # every request's activity, none lost
        assert len(sessions(app)) == 1  # one tutor, one key: one session (R5)


@pytest.mark.real
@pytest.mark.parametrize("store", ["redis", "sql"])
def test_a_stalled_database_write_is_given_up_in_time(
    store: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A trigger that sleeps 3 s on every activity INSERT stands for a lock held elsewhere or
    a struggling primary: the tracked view answers once TUTOR_TIMES_SQL_TIMEOUT has passed,
    and the failure is logged and counted (R9)."""
    with built("postgres", TUTOR_TIMES_STORE=store, TUTOR_TIMES_SQL_TIMEOUT=0.3) as app:
        tutor = login(app, "tutor1")
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE OR REPLACE FUNCTION tt_stall() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$"
                )
            )
            conn.execute(
                sa.text(
                    "CREATE TRIGGER tt_stall BEFORE INSERT ON session_activities"
                    " FOR EACH ROW EXECUTE FUNCTION tt_stall()"
                )
            )
        try:
            before = tutor_times.failures
            with caplog.at_level(logging.ERROR, logger="tutor_times"):
                started = time.monotonic()
                r = tutor.get(INBOX)
                elapsed = time.monotonic() - started
            assert r.status_code == 200
            assert elapsed < 2.5  # the 3-second stall was cut short
            assert tutor_times.failures == before + 1
            assert "statement timeout" in caplog.text
        finally:
            with app.app_context(), db.engine.begin() as conn:
                conn.execute(sa.text("DROP TRIGGER IF EXISTS tt_stall ON session_activities"))
                conn.execute(sa.text("DROP FUNCTION IF EXISTS tt_stall()"))


def test_a_report_never_waits_for_the_host_pool(backend: str) -> None:
    """Reports read through a pool of their own: with every connection of the host's pool
    taken (one by this test, one by the request's own user loader) a report still answers,
    rather than waiting out the host's pool timeout."""
    with built(
        backend,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 2, "max_overflow": 0, "pool_timeout": 1},
    ) as app:
        convenor = login(app, "convenor")
        with app.app_context(), db.engine.connect() as held:
            held.execute(sa.text("SELECT 1"))
            started = time.monotonic()
            r = convenor.get("/tutor-times/units/1/summary")
            assert r.status_code == 200, r.get_json()
            assert time.monotonic() - started < 1


@pytest.mark.real
def test_reports_keep_their_prepared_statements() -> None:
    """A report's connection goes back to its pool with its transaction committed, not
    rolled back (psycopg forgets its prepared statements at every rollback): after a few
    requests the summary's statements run prepared, not parsed and planned each time."""
    with built("postgres") as app:
        convenor = login(app, "convenor")
        for _ in range(8):
            assert convenor.get("/tutor-times/units/1/summary").status_code == 200
        with app.app_context():
            engine = tutor_times.state.reports_engine(db.engine)
            assert engine is not db.engine
            with engine.connect() as conn:
                prepared = conn.execute(
                    sa.text("SELECT statement FROM pg_prepared_statements")
                ).scalars()
                assert any("marking_sessions" in statement for statement in prepared)


@pytest.mark.real
def test_prepared_reports_are_planned_for_their_own_range() -> None:
    """A report's statements are prepared once per connection but planned for each range
    they are given: a plan made for no range in particular (PostgreSQL's generic plan,
    which it switches to after five runs) suits neither a day nor two years, and over two
    years it grouped a unit's sessions at about half the speed (benchmarks/README.md, B3)."""
    with built("postgres") as app:
        convenor = login(app, "convenor")
        # psycopg prepares a statement at its sixth run, PostgreSQL plans the first five runs
        # of a prepared statement for their values and may keep a generic plan after that
        for days in (1, 7, 84, 365, 730) * 5:
            to = date(2026, 3, 10)
            query = f"from={to - timedelta(days=days - 1)}&to={to}"
            assert convenor.get(f"/tutor-times/units/1/summary?{query}").status_code == 200
        with app.app_context():
            engine = tutor_times.state.reports_engine(db.engine)
            with engine.connect() as conn:
                plans = conn.execute(
                    sa.text(
                        "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                        " WHERE statement LIKE '%marking_sessions%'"
                    )
                ).all()
        # each run past the first five of its prepared statement (where PostgreSQL would
        # start to weigh its generic plan) planned for its own range still
        assert plans and all(custom > 5 for _, custom in plans)
        assert sum(generic for generic, _ in plans) == 0


@pytest.mark.real
def test_the_stored_split_of_class_times_runs_on_one_generic_plan() -> None:
    """The stored class-time split's statement (R12) reads by key whatever the range, and
    planning it took twice as long as running it: it alone runs on a generic plan, made
    once per connection, while every statement of the figures is still planned for its own
    range (benchmarks/README.md, B3 with class times)."""
    with built("postgres") as app:
        # a class of every tutor at the start of each range asked, so every report splits
        tutor_times.class_times_loader(
            lambda unit_id, start, end: [(None, start, start + timedelta(hours=1))]
        )
        convenor = login(app, "convenor")
        for days in (1, 7, 84, 365, 730) * 5:
            to = date(2026, 3, 10)
            query = f"from={to - timedelta(days=days - 1)}&to={to}"
            assert convenor.get(f"/tutor-times/units/1/summary?{query}").status_code == 200
        tutor_times.forget_workload_loaders()
        with app.app_context():
            engine = tutor_times.state.reports_engine(db.engine)
            with engine.connect() as conn:

                def plans(table: str) -> list[tuple[int, int]]:
                    return [
                        (generic, custom)
                        for generic, custom in conn.execute(
                            sa.text(
                                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                                " WHERE statement LIKE :like"
                            ),
                            {"like": f"%FROM {table} %"},
                        )
                    ]

                split, figures = plans("tutor_times_class_blocks"), plans("marking_sessions")
                # and the connection's own setting is in force again after it
                assert conn.execute(sa.text("SHOW plan_cache_mode")).scalar() == (
                    "force_custom_plan"
                )
        assert split and all(custom == 0 for _, custom in split)
        assert sum(generic for generic, _ in split) >= 20
        assert figures and sum(generic for generic, _ in figures) == 0


@pytest.mark.real
def test_a_statement_on_its_generic_plan_gives_back_the_transactions_setting() -> None:
    """The setting a statement is given its generic plan under lasts for that statement
    alone: the next statement of the same transaction is planned as the connection says."""
    from tutor_times.store.drivers import rows_on_generic_plan

    statement = sa.text("SELECT n FROM generate_series(1, :top) AS n").bindparams(
        sa.bindparam("top", type_=sa.Integer)
    )
    with built("postgres") as app, app.app_context():
        engine = tutor_times.state.reports_engine(db.engine)
        compiled: dict[str, str] = {}
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW plan_cache_mode")).scalar() == "force_custom_plan"
            for top in (3, 4):
                rows = rows_on_generic_plan(conn, statement, {"top": top}, compiled)
                assert [n for (n,) in rows] == list(range(1, top + 1))
                assert conn.execute(sa.text("SHOW plan_cache_mode")).scalar() == (
                    "force_custom_plan"
                )
            generic = conn.execute(
                sa.text(
                    "SELECT generic_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE '%generate_series%'"
                )
            ).scalar()
        assert generic == 2


@pytest.mark.real
def test_reports_run_without_jit_and_group_in_memory() -> None:
    """A report over years has plan costs past PostgreSQL's jit_above_cost, and compiling its
    expressions costs more than running them: the reports' connections turn JIT off. They
    also have the memory to hash a range's sessions by tutor (under the default 4 MB the
    planner sorted 50,000 sessions on disk instead). The host's own connections keep the
    server's settings."""
    with built("postgres") as app:
        convenor = login(app, "convenor")
        assert convenor.get("/tutor-times/units/1/summary").status_code == 200
        with app.app_context():
            engine = tutor_times.state.reports_engine(db.engine)
            with engine.connect() as conn:
                assert conn.execute(sa.text("SHOW jit")).scalar() == "off"
                assert conn.execute(sa.text("SHOW work_mem")).scalar() == "32MB"
                assert set_by_client(conn) == {"jit", "work_mem", "plan_cache_mode"}
            with db.engine.connect() as conn:
                assert set_by_client(conn) == set()


@pytest.mark.real
def test_a_host_that_sets_work_mem_in_its_options_keeps_it() -> None:
    """The reports' settings yield to the host's: its own ``-c work_mem`` stands on the
    reports' connections too (JIT is still turned off there)."""
    options = {"connect_args": {"options": "-c work_mem=8MB"}}
    with built("postgres", SQLALCHEMY_ENGINE_OPTIONS=options) as app:
        with app.app_context():
            engine = tutor_times.state.reports_engine(db.engine)
            with engine.connect() as conn:
                assert conn.execute(sa.text("SHOW work_mem")).scalar() == "8MB"
                assert conn.execute(sa.text("SHOW jit")).scalar() == "off"


def set_by_client(conn: sa.Connection) -> set[str]:
    """Which of the settings the reports change this connection has from its client (its
    connection options) rather than from the server's configuration."""
    return set(
        conn.execute(
            sa.text(
                "SELECT name FROM pg_settings WHERE name IN ('jit', 'work_mem', 'plan_cache_mode')"
                " AND source = 'client'"
            )
        ).scalars()
    )
