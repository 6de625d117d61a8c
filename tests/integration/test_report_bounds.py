"""What a report may cost and what range it may be asked for: every endpoint takes ranges
within the same bounds (a year inside either end of the calendar, so no arithmetic around a
range can leave it); a what-if that would cut more sessions than its bound is a 413; a
report that runs past TUTOR_TIMES_REPORT_TIMEOUT is a 503 that says so."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from demo.extensions import db, tutor_times

from ..conftest import Clock, built, login

P = "/tutor-times"
#: every endpoint and page that takes a range
RANGED = [
    "/units/1/summary",
    "/units/1/summary?timeout=60",
    "/units/1/timeline",
    "/units/1/timeline?bucket=week",
    "/units/1/timeline?timeout=60",
    "/units/1/tasks",
    "/units/1/sessions",
    "/units/1/sessions?format=csv&style=ontrack",
    "/me/sessions",
    "/units/1/dashboard",
    "/units/1/dashboard?timeout=60",
    "/me/dashboard",
]


@pytest.fixture
def ranged(backend: str, clock: Clock) -> Iterator[Flask]:
    with built(backend) as app:
        yield app


def get(app: Flask, path: str, args: str) -> tuple[int, str, str]:
    r = login(app, "convenor").get(f"{P}{path}{'&' if '?' in path else '?'}{args}")
    return r.status_code, str(r.mimetype), r.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/units/1/dashboard", "/me/dashboard"])
@pytest.mark.parametrize(
    "args",
    [
        "from=0001-01-01&to=0001-01-02",
        "from=0001-01-01T00:00:00Z&to=0001-01-01T01:00:00Z",
        "from=9999-12-30&to=9999-12-31",
        "from=0001-01-01&to=0001-01-02&tz=Pacific/Kiritimati",
    ],
)
def test_a_dashboard_at_the_ends_of_the_calendar_is_a_400_page(
    ranged: Flask, path: str, args: str
) -> None:
    status, mimetype, text = get(ranged, path, args)
    assert (status, mimetype) == (400, "text/html"), text[:300]
    assert "0002-01-01" in text and "9998-12-31" in text


@pytest.mark.slow
@pytest.mark.parametrize("path", RANGED)
@pytest.mark.parametrize(
    ("args", "field"),
    [
        ("from=0001-01-01&to=0001-01-09", "from"),
        ("from=0001-12-31T23:59:59Z&to=0002-01-03", "from"),
        ("to=0002-01-03", "from"),  # the default range: six days before `to`
        ("from=9998-12-25&to=9999-01-01", "to"),
        ("from=9998-12-31&to=9999-12-31T23:59:59Z", "to"),
    ],
)
def test_every_endpoint_refuses_a_range_past_the_same_bounds(
    ranged: Flask, path: str, args: str, field: str
) -> None:
    status, mimetype, text = get(ranged, path, args)
    assert status == 400, text[:300]
    if mimetype == "application/json":
        assert f'"field":"{field}"' in text.replace(" ", "")
    assert "between 0002-01-01 and 9998-12-31" in text


@pytest.mark.slow
@pytest.mark.parametrize("path", RANGED)
@pytest.mark.parametrize(
    "args",
    [
        "from=0002-01-01&to=0002-01-02&tz=Pacific/Kiritimati",
        "from=0002-01-01&to=0002-01-02&tz=Etc/GMT%2B12",
        "from=0002-01-01T00:00:00Z&to=0002-01-01T01:00:00Z",
        "from=9998-12-30&to=9998-12-31&tz=Pacific/Kiritimati",
        "from=9998-12-30&to=9998-12-31&tz=Etc/GMT%2B12",
        "to=0002-01-07",
    ],
)
def test_the_ends_of_the_bounds_are_answered(ranged: Flask, path: str, args: str) -> None:
    status, _, text = get(ranged, path, args)
    assert status == 200, text[:300]


# -- what a report may cost -------------------------------------------------------------------

WHAT_IF = "from=2026-03-02&to=2026-03-02&tz=UTC"
KEY: dict[str, Any] = {"marker_id": 3, "unit_id": 1, "ip_address": "10.0.0.1"}


@pytest.fixture
def sixty_activities(backend: str, clock: Clock) -> Iterator[Flask]:
    """Sixty activities of one tutor two seconds apart (one stored session), under a what-if
    bound of twenty sessions."""
    with built(backend, TUTOR_TIMES_WHATIF_MAX_SESSIONS=20) as app:
        with app.app_context():
            for _ in range(60):
                tutor_times.record_activity("inbox", **KEY)
                clock.advance(seconds=2)
        yield app


@pytest.mark.parametrize(
    "path", ["/units/1/summary", "/units/1/timeline", "/units/1/timeline?bucket=week"]
)
def test_a_what_if_that_would_cut_more_sessions_than_its_bound_is_a_413(
    sixty_activities: Flask, path: str
) -> None:
    client = login(sixty_activities, "convenor")
    sep = "&" if "?" in path else "?"
    # a timeout of 1 s cuts each activity into a session of its own: 60, over the bound
    r = client.get(f"{P}{path}{sep}{WHAT_IF}&timeout=1")
    assert r.status_code == 413, r.get_data(as_text=True)[:300]
    error = r.get_json()["error"]
    assert error["field"] == "timeout"
    assert (
        "20 sessions" in error["message"]
        and "TUTOR_TIMES_WHATIF_MAX_SESSIONS" in (error["message"])
    )
    # under a longer timeout the same range is one session, and is answered
    r = client.get(f"{P}{path}{sep}{WHAT_IF}&timeout=60")
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    body = r.get_json()
    sessions = (
        body["totals"]["sessions"]
        if "totals" in body
        else sum(b["sessions"] for b in body["buckets"])
    )
    assert sessions == 1


def test_the_dashboard_with_a_what_if_over_its_bound_is_a_413_page(sixty_activities: Flask) -> None:
    client = login(sixty_activities, "convenor")
    r = client.get(f"{P}/units/1/dashboard?{WHAT_IF}&timeout=1")
    assert (r.status_code, r.mimetype) == (413, "text/html")
    assert "TUTOR_TIMES_WHATIF_MAX_SESSIONS" in r.get_data(as_text=True)
    assert client.get(f"{P}/units/1/dashboard?{WHAT_IF}&timeout=60").status_code == 200


@pytest.fixture
def postgres_app(clock: Clock) -> Iterator[Flask]:
    with built("postgres", TUTOR_TIMES_REPORT_TIMEOUT=0.5) as app:
        yield app


@contextlib.contextmanager
def tables_locked(app: Flask, *, release_after: float) -> Iterator[None]:
    """Another connection holds the tracking tables in ACCESS EXCLUSIVE mode (as a migration
    would): every report waits for it. It lets go after ``release_after`` seconds whatever
    happens, so a report that does not give up still ends."""
    engine = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    conn = engine.connect()
    conn.execute(
        sa.text("LOCK TABLE marking_sessions, session_activities IN ACCESS EXCLUSIVE MODE")
    )
    timer = threading.Timer(release_after, conn.rollback)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        conn.rollback()
        conn.close()
        engine.dispose()


@pytest.mark.real
@pytest.mark.parametrize(
    "path",
    [
        "/units/1/summary",
        "/units/1/summary?timeout=60",
        "/units/1/timeline",
        "/units/1/tasks",
        "/units/1/sessions",
        "/units/1/active",
        "/me/sessions",
    ],
)
def test_a_report_past_the_report_timeout_is_a_503(postgres_app: Flask, path: str) -> None:
    client = login(postgres_app, "convenor")
    assert client.get(f"{P}{path}").status_code == 200  # the reports' pool is connected
    with tables_locked(postgres_app, release_after=15):
        began = time.monotonic()
        r = client.get(f"{P}{path}")
        took = time.monotonic() - began
    assert r.status_code == 503, r.get_data(as_text=True)[:300]
    assert took < 5
    message = r.get_json()["error"]["message"]
    assert "TUTOR_TIMES_REPORT_TIMEOUT" in message and "0.5 s" in message
    assert client.get(f"{P}{path}").status_code == 200  # and the next one is answered


@pytest.mark.real
@pytest.mark.parametrize("path", ["/units/1/dashboard", "/units/1/dashboard?timeout=60"])
def test_a_dashboard_past_the_report_timeout_is_a_503_page(postgres_app: Flask, path: str) -> None:
    client = login(postgres_app, "convenor")
    with tables_locked(postgres_app, release_after=15):
        r = client.get(f"{P}{path}")
    assert (r.status_code, r.mimetype) == (503, "text/html")
    assert "TUTOR_TIMES_REPORT_TIMEOUT" in r.get_data(as_text=True)
    assert client.get(f"{P}{path}").status_code == 200


@pytest.mark.slow
def test_a_what_if_over_many_activities_stops_at_the_report_timeout(
    backend: str, clock: Clock
) -> None:
    """300,000 stored activities in one session, a second apart: the what-if reads them all
    (on PostgreSQL one statement sorts them, on SQLite they are cut here as they stream),
    which takes far longer than 50 ms; it is stopped there, on either database."""
    with built(backend, TUTOR_TIMES_REPORT_TIMEOUT=0.05) as app:
        with app.app_context():
            tutor_times.record_activity("inbox", **KEY)
            if db.engine.dialect.name == "postgresql":
                db.session.execute(
                    sa.text(
                        "INSERT INTO session_activities"
                        " (marking_session_id, action, created_at, updated_at, source)"
                        " SELECT s.id, 'inbox', s.start_time + g * interval '1 second',"
                        " s.start_time, 'server'"
                        " FROM marking_sessions s, generate_series(1, 300000) g"
                    )
                )
                db.session.execute(sa.text("ANALYZE session_activities"))
            else:
                [session] = db.session.scalars(sa.select(tutor_times.MarkingSession)).all()
                db.session.execute(
                    sa.insert(tutor_times.SessionActivity),
                    [
                        {
                            "marking_session_id": session.id,
                            "action": "inbox",
                            "created_at": session.start_time + timedelta(seconds=i),
                            "updated_at": session.start_time,
                        }
                        for i in range(1, 300_001)
                    ],
                )
            db.session.commit()
        client = login(app, "convenor")
        began = time.monotonic()
        r = client.get(f"{P}/units/1/summary?from=2026-03-01&to=2026-03-09&timeout=900")
        assert r.status_code == 503, r.get_data(as_text=True)[:300]
        assert time.monotonic() - began < 5
        assert "TUTOR_TIMES_REPORT_TIMEOUT" in r.get_json()["error"]["message"]
