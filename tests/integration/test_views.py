"""The report endpoints that exist so far: who may see what."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from demo.extensions import tutor_times

from ..conftest import Clock, login

ACTIVE = "/tutor-times/units/1/active"


@pytest.fixture
def two_tutors_marking(app: Flask, clock: Clock) -> None:
    with app.app_context():
        # closed already: not active
        clock.advance(hours=-1)
        tutor_times.record_activity("inbox", marker_id=3, unit_id=2, ip_address="10.0.0.3")
        clock.advance(hours=1)
        tutor_times.close_expired_sessions()
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.0.0.3")
        tutor_times.record_activity("inbox", marker_id=4, unit_id=1, ip_address="10.0.0.4")
        clock.advance(minutes=7, seconds=30)
        tutor_times.record_activity("assessing", marker_id=3, unit_id=1, ip_address="10.0.0.3")


@pytest.mark.parametrize("username", ["admin", "convenor"])
def test_convenors_and_admins_see_every_open_session(
    app: Flask, two_tutors_marking: None, username: str
) -> None:
    r = login(app, username).get(ACTIVE)
    assert r.status_code == 200
    body = r.get_json()
    assert [(s["marker_id"], s["duration_minutes"], s["active"]) for s in body["sessions"]] == [
        (3, 7, True),
        (4, 1, True),
    ]
    assert body["sessions"][0]["start_time"] == "2026-03-02T09:00:00Z"
    assert body["sessions"][0]["last_activity"] == "2026-03-02T09:07:30Z"


def test_a_tutor_sees_only_their_own(app: Flask, two_tutors_marking: None) -> None:
    body = login(app, "tutor2").get(ACTIVE).get_json()
    assert [s["marker_id"] for s in body["sessions"]] == [4]


@pytest.mark.parametrize(("username", "status"), [("student1", 403), ("tutor1", 403)])
def test_no_role_in_the_unit_is_forbidden(app: Flask, username: str, status: int) -> None:
    path = ACTIVE if username == "student1" else "/tutor-times/units/2/active"
    r = login(app, username).get(path)
    assert r.status_code == status
    assert r.get_json()["error"]["status"] == status


def test_anonymous_gets_401_json_even_with_a_login_view(app: Flask) -> None:
    from demo.extensions import login_manager

    login_manager.login_view = "lms.login"
    try:
        r = app.test_client().get(ACTIVE)
    finally:
        login_manager.login_view = None
    assert r.status_code == 401
    assert r.get_json() == {"error": {"status": 401, "message": "authentication required"}}


@pytest.mark.parametrize(
    ("idle", "shown"),
    [
        (timedelta(minutes=14, seconds=59), True),
        (timedelta(minutes=15), False),  # R2: the next activity would start a new session
        (timedelta(hours=3), False),
    ],
)
def test_an_idle_session_is_not_active_even_before_a_sweep_closes_it(
    app: Flask, clock: Clock, idle: timedelta, shown: bool
) -> None:
    with app.app_context():
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.0.0.3")
    clock.advance(seconds=idle.total_seconds())
    client = login(app, "convenor")
    live = client.get(ACTIVE).get_json()["sessions"]
    assert [s["marker_id"] for s in live] == ([3] if shown else [])
    # still open in SQL (no sweep ran), and every report agrees on whether it is live
    [row] = client.get("/tutor-times/units/1/sessions").get_json()["sessions"]
    assert (row["end_time"], row["active"]) == (None, shown)
    detail = client.get(f"/tutor-times/sessions/{row['id']}").get_json()
    assert detail["active"] is shown
