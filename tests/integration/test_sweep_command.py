"""``flask tutor-times sweep``, the cron alternative to the worker: it does what a worker's
pass does (closing, then the heartbeat, expired idempotency keys and retention), it never
closes sessions as of a time that has not come, and a session closed too early is reopened
by the tutor's next activity rather than extended while it stays closed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from demo.extensions import db, tutor_times

from ..conftest import T0, Clock, activities, built, login, sessions
from .test_idempotency import keys_stored, post
from .test_retention import record_sessions

DAY = timedelta(days=1)


def sweep(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["tutor-times", "sweep", *args])
    return result.exit_code, result.output


def heartbeats(app: Flask) -> int:
    with app.app_context():
        jobs = tutor_times.models.Jobs
        return int(db.session.scalar(sa.select(sa.func.count()).select_from(jobs)) or 0)


def test_the_sweep_command_forgets_expired_keys_and_applies_retention(
    backend: str, clock: Clock
) -> None:
    with built(backend, TUTOR_TIMES_RETENTION_DAYS=30) as app:
        clock.set(T0 - 2 * DAY)
        assert post(login(app, "tutor1"), "an-old-key").status_code == 201
        record_sessions(app, clock)  # sessions 45, 31, 29 and 2 days old; one open at T0
        assert keys_stored(app) == 1 and len(sessions(app)) == 6

        code, output = sweep(app)

        assert code == 0, output
        assert keys_stored(app) == 0  # older than TUTOR_TIMES_IDEMPOTENCY_TTL (a day)
        ips = sorted(s.ip_address for s in sessions(app))
        assert ips == ["10.0.0.3", "10.0.0.4", "10.0.0.9", "127.0.0.1"]  # 45 and 31 days: gone
        assert heartbeats(app) >= 1  # /health sees the cron sweep as it sees a worker


@pytest.mark.parametrize("now", ["9999-12-31", "2026-03-03 09:00:00"])
def test_a_sweep_as_of_a_time_still_to_come_is_refused(app: Flask, clock: Clock, now: str) -> None:
    with app.app_context():
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.0.0.1")
    clock.advance(minutes=1)

    code, output = sweep(app, "--now", now)

    assert code != 0
    assert "--now" in output and "future" in output
    [live] = sessions(app)
    assert live.end_time is None  # the tutor is still marking


def test_a_sweep_as_of_a_past_time_closes_what_was_idle_then(app: Flask, clock: Clock) -> None:
    with app.app_context():
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.0.0.1")
    clock.advance(hours=2)
    code, output = sweep(app, "--now", (T0 + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"))
    assert code == 0, output
    assert "closed 1 idle session" in output
    assert sessions(app)[0].end_time is not None


def test_an_activity_for_a_session_closed_too_early_reopens_it(app: Flask, clock: Clock) -> None:
    """A session closed before it was idle (a sweep as of a later time, through the API)
    takes the tutor's next activity within the timeout as R2 says, and is open again: it
    is neither extended while closed nor dropped from the live sessions."""
    key: dict[str, Any] = {"marker_id": 3, "unit_id": 1, "ip_address": "10.0.0.1"}
    with app.app_context():
        tutor_times.record_activity("inbox", **key)
        assert tutor_times.close_expired_sessions(T0 + DAY) == 1
        for minutes in (5, 10):
            clock.set(T0 + timedelta(minutes=minutes))
            tutor_times.record_activity("inbox", **key)

    [reopened] = sessions(app)
    assert reopened.end_time is None and reopened.duration_minutes is None
    assert len(activities(app)) == 3
    live = login(app, "convenor").get("/tutor-times/units/1/active").get_json()["sessions"]
    assert [s["id"] for s in live] == [reopened.id]
    # and it closes as any session does: at its last activity, once idle
    with app.app_context():
        assert tutor_times.close_expired_sessions(T0 + timedelta(hours=1)) == 1
    [closed] = sessions(app)
    assert closed.end_time == T0 + timedelta(minutes=10)
