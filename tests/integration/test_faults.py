"""Faults of the real parts: a Redis that accepts connections but never answers, and a
database that refuses to store an activity. The host's view answers either way."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from demo.extensions import db, tutor_times

from ..conftest import (
    BACKENDS,
    TASK,
    Clock,
    activities,
    build,
    login,
    sessions,
)

#: generous against the 0.25 s timeouts; redis-py's own defaults would wait forever here
STALL_BOUND_S = 2.0


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


REFUSE = {
    "sqlite": [
        "CREATE TRIGGER tt_refuse BEFORE INSERT ON session_activities"
        " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    ],
    "postgres": [
        "CREATE FUNCTION tt_refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
        "CREATE TRIGGER tt_refuse BEFORE INSERT ON session_activities"
        " FOR EACH ROW EXECUTE FUNCTION tt_refuse()",
    ],
}
ALLOW = {
    "sqlite": ["DROP TRIGGER IF EXISTS tt_refuse"],
    "postgres": [
        "DROP TRIGGER IF EXISTS tt_refuse ON session_activities",
        "DROP FUNCTION IF EXISTS tt_refuse()",
    ],
}


def run_sql(app: Flask, statements: list[str]) -> None:
    with app.app_context(), db.engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


@pytest.fixture
def refusing_database(backend_name: str, store: str, clock: Clock) -> Iterator[Flask]:
    """The database refuses every new activity (as a full disk or a lost primary would)."""
    for app in build(backend_name, TUTOR_TIMES_STORE=store):
        run_sql(app, ALLOW[backend_name])
        run_sql(app, REFUSE[backend_name])
        try:
            yield app
        finally:
            run_sql(app, ALLOW[backend_name])


def test_a_database_write_failure_leaves_the_view_alone_and_is_counted(
    refusing_database: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    tutor = login(refusing_database, "tutor1")
    before = tutor_times.failures
    with caplog.at_level(logging.ERROR, logger="tutor_times"):
        r = tutor.put(TASK, json={"status": "complete"})
    assert r.status_code == 200
    assert r.get_json()["status"] == "complete"
    assert tutor_times.failures == before + 1
    assert "could not record the 'assessing' activity" in caplog.text
    assert "disk full" in caplog.text  # the exception itself is logged
    assert activities(refusing_database) == []
    assert sessions(refusing_database) == []  # the transaction was rolled back whole


def test_a_reported_activity_the_database_refuses_is_a_503(
    refusing_database: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    before = tutor_times.failures
    with caplog.at_level(logging.ERROR, logger="tutor_times"):
        r = login(refusing_database, "tutor1").post(
            "/tutor-times/activities", json={"action": "inbox", "unit_id": 1}
        )
    assert r.status_code == 503
    assert r.get_json()["error"]["status"] == 503
    assert tutor_times.failures == before + 1
    assert "disk full" in caplog.text
