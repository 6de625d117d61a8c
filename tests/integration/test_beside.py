"""A page's reports read beside its own on a second connection (tutor_times/web/beside.py):
the same snapshot as the page's, none taken from a pool that has none to spare, errors where
they are asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from flask import Flask, g

from demo.extensions import db, tutor_times
from tutor_times.web import connections
from tutor_times.web.beside import Beside

from ..conftest import built

START = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)


def sessions(conn: sa.Connection, *_: object, min_minutes: int) -> int:
    """A report that counts every session."""
    return int(conn.execute(sa.text("SELECT count(*) FROM marking_sessions")).scalar_one())


def add_session(app: Flask) -> None:
    """A closed session of tutor 3 in unit 1, committed by a writer of its own."""
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO marking_sessions (marker_id, unit_id, ip_address, start_time,"
                " end_time, duration_minutes, created_at, updated_at)"
                " VALUES (3, 1, '10.1.1.1', :t, :t, 1, :t, :t)"
            ),
            {"t": START},
        )


@pytest.fixture
def pg() -> Iterator[Flask]:
    with built("postgres", TUTOR_TIMES_SQL_POOL_SIZE=1) as app:
        yield app


@pytest.mark.real
def test_a_report_beside_reads_the_pages_snapshot(pg: Flask) -> None:
    """A session committed after the page began reading is in neither of its connections'
    reports: the second connection imported the first one's snapshot."""
    with pg.test_request_context(), connections.one_connection(beside=True):
        before = connections.report(sessions)
        assert isinstance(g.get(connections.BESIDE), Beside)
        add_session(pg)
        beside = connections.later(sessions)
        assert connections.report(sessions) == beside() == before
    with pg.test_request_context(), connections.one_connection(beside=True):
        assert connections.later(sessions)() == before + 1


@pytest.mark.real
def test_without_a_spare_connection_the_page_reads_alone(pg: Flask) -> None:
    """The reports' pool of one connection (and one more it may open) has none to spare
    while another reader holds one: the page does not wait, it reads every report on its
    own connection."""
    with pg.app_context():
        engine = tutor_times.state.reports_engine(db.engine)
    with engine.connect() as held:
        held.execute(sa.text("SELECT 1"))
        with pg.test_request_context(), connections.one_connection(beside=True):
            assert g.get(connections.BESIDE) is None
            page = g.get(connections.SHARED_CONNECTION)
            assert connections.later(lambda conn, *_, **__: conn)() is page
        held.rollback()


@pytest.mark.real
def test_an_error_beside_is_raised_where_its_result_is_asked_for(pg: Flask) -> None:
    def broken(conn: sa.Connection, *_: object, min_minutes: int) -> int:
        return int(conn.execute(sa.text("SELECT 1 / 0")).scalar_one())

    with pg.test_request_context(), connections.one_connection(beside=True):
        result = connections.later(broken)
        with pytest.raises(sa.exc.DataError):
            result()
        # the page's own connection reads on
        assert connections.report(sessions) >= 0
    # and both connections went back to the pool usable
    with pg.test_request_context(), connections.one_connection(beside=True):
        assert connections.later(sessions)() == connections.report(sessions)


def test_elsewhere_the_reports_run_on_the_pages_connection() -> None:
    """SQLite has no snapshots to share: every report runs in turn on the page's
    connection."""
    with built("sqlite") as app, app.test_request_context():
        with connections.one_connection(beside=True):
            assert g.get(connections.BESIDE) is None
            assert connections.later(sessions)() == connections.report(sessions)
