"""Reports on a read replica: with TUTOR_TIMES_REPORTS_BIND the report endpoints read from a
real streaming replica of the test database, while tracking and closing write to the primary.

The primary and the replica are this module's own, whatever the machine's PostgreSQL allows:
``initdb`` a primary whose own pg_hba.conf accepts loopback replication, ``pg_basebackup -R``
a replica of it, each in a temporary directory on a free loopback port, started once and
stopped by its PID.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from demo.extensions import db, tutor_times

from ..conftest import (
    TASK,
    Clock,
    built,
    login,
    require_real_services,
    sessions,
)
from ..servers import OwnPostgres, OwnReplica

pytestmark = [pytest.mark.real, pytest.mark.system]


@pytest.fixture(scope="module")
def primary() -> Iterator[str]:
    """The URL of a database on a primary of this module's own, holding the demo's schema
    and data before the replica copies it."""
    require_real_services()  # the app's Redis is the test Redis
    own = OwnPostgres().start()
    try:
        url = own.create_database("tutor_times")
        with built("postgres", SQLALCHEMY_DATABASE_URI=url):
            pass  # the schema and the demo's data, once
        yield url
    finally:
        own.stop()


@pytest.fixture(scope="module")
def replica(primary: str) -> Iterator[OwnReplica]:
    own = OwnReplica(primary).start()
    yield own
    own.stop()


@pytest.fixture(autouse=True)
def _forget_the_bind() -> Iterator[None]:
    """Flask-SQLAlchemy keeps a metadata per bind it has seen on the demo's shared ``db``, and
    create_all() of a later app without the bind would look for its engine: drop it after."""
    yield
    db.metadatas.pop("replica", None)


@pytest.fixture
def app(primary: str, replica: OwnReplica, clock: Clock) -> Iterator[Flask]:
    with built(
        "postgres",
        SQLALCHEMY_DATABASE_URI=primary,
        SQLALCHEMY_BINDS={"replica": replica.url()},
        TUTOR_TIMES_REPORTS_BIND="replica",
    ) as app:
        replica.wait_for_replay()  # the tables emptied for this test, there too
        yield app


class Statements:
    """The SQL every engine ran, by the server it ran on (named by its port): which server
    answered what, whichever engine the reports read with (they have a pool of their own)."""

    def __init__(self, servers: dict[str, int]) -> None:
        self.servers = {port: name for name, port in servers.items()}
        self.ran: dict[str, list[str]] = {name: [] for name in servers}

    def __enter__(self) -> Statements:
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        name = self.servers.get(conn.engine.url.port or 5432)
        if name is not None:
            self.ran[name].append(statement)

    def touching(self, name: str, table: str) -> list[str]:
        return [s for s in self.ran[name] if table in s]


def where(engine: sa.Engine) -> tuple[bool, int]:
    """(in recovery, port) of the server ``engine`` connects to."""
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT pg_is_in_recovery(), inet_server_port()")).one()
        return bool(row[0]), int(row[1])


def test_reports_answer_from_the_replica(app: Flask, replica: OwnReplica) -> None:
    with app.app_context():
        replica_engine, primary_engine = db.engines["replica"], db.engine
        assert where(replica_engine) == (True, replica.port)
        assert where(primary_engine)[0] is False
    # logging in is the app's first request: its start-up checks are done before we look
    convenor = login(app, "convenor")
    servers = {"replica": replica.port, "primary": where(primary_engine)[1]}
    with Statements(servers) as seen:
        for report in ("summary", "sessions", "active", "tasks", "timeline"):
            r = convenor.get(f"/tutor-times/units/1/{report}")
            assert r.status_code == 200, r.get_json()
    assert len(seen.touching("replica", "marking_sessions")) >= 5
    assert seen.touching("primary", "marking_sessions") == []


def test_tracking_writes_the_primary_and_a_report_shows_it_once_replayed(
    app: Flask, replica: OwnReplica, clock: Clock
) -> None:
    tutor = login(app, "tutor1")
    assert tutor.put(TASK, json={"status": "discuss"}).status_code == 200
    [session] = sessions(app)  # on the primary (the replica refuses every write)
    replica.wait_for_replay()
    convenor = login(app, "convenor")
    detail = convenor.get(f"/tutor-times/sessions/{session.id}").get_json()
    assert [a["action"] for a in detail["activity_list"]] == ["assessing"]
    assert detail["end_time"] is None

    # closing writes the primary too; the replica shows it once it has replayed it
    with app.app_context():
        closed = tutor_times.close_expired_sessions(now=clock() + timedelta(hours=1))
    assert closed == 1
    replica.wait_for_replay()
    detail = convenor.get(f"/tutor-times/sessions/{session.id}").get_json()
    assert detail["end_time"] is not None


def test_without_the_setting_reports_read_the_primary(
    primary: str, replica: OwnReplica, clock: Clock
) -> None:
    # the replica bound for the host's own use, but not named for reports
    binds = {"replica": replica.url()}
    with built("postgres", SQLALCHEMY_DATABASE_URI=primary, SQLALCHEMY_BINDS=binds) as app:
        convenor = login(app, "convenor")
        with app.app_context():
            servers = {"replica": replica.port, "primary": where(db.engine)[1]}
        with Statements(servers) as seen:
            r = convenor.get("/tutor-times/units/1/summary")
        assert r.status_code == 200
        assert seen.touching("replica", "marking_sessions") == []
        assert seen.touching("primary", "marking_sessions") != []
