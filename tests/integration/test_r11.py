"""R11: a user adds minutes or assessments only by doing the work.

What a client reports itself (POST /activities) is limited to TUTOR_TIMES_CLIENT_ACTIONS
(never `assessing`), to a unit where the user is staff, to ids the host confirms as that
unit's, and to the backdating window; it is stored as `client` and reports tell it apart.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from demo.extensions import tutor_times

from ..conftest import T0, Clock, activities, login, sessions

P = "/tutor-times"


def report(client: FlaskClient, status: int, **body: Any) -> Any:
    r = client.post(f"{P}/activities", json=body)
    assert r.status_code == status, r.get_data(as_text=True)
    return r.get_json()


def test_invented_assessments_in_the_past_are_refused_and_count_nothing(
    app: Flask, clock: Clock
) -> None:
    """The attack as it was seen: thirteen 'assessing' reports on a task that does not exist,
    stepping 14 minutes back into last month. Every one is refused; nothing is stored."""
    tutor = login(app, "tutor1")
    clock.set(T0)
    for i in range(13):
        at = (T0 - timedelta(days=30) - timedelta(minutes=14 * i)).isoformat()
        body = report(tutor, 400, action="assessing", unit_id=1, task_id=999999, at=at)
        assert body["error"]["field"] == "action"
    # each rule alone refuses too: a reading action on a task outside the unit, or long ago
    report(tutor, 400, action="get-submission-details", unit_id=1, task_id=999999)
    old = (T0 - timedelta(days=30)).isoformat()
    body = report(tutor, 400, action="inbox", unit_id=1, at=old)
    assert body["error"]["field"] == "at"
    report(tutor, 400, action="inbox", unit_id=1, at="2020-01-01T00:00:00Z")
    assert activities(app) == [] and sessions(app) == []
    summary = login(app, "convenor").get(f"{P}/units/1/summary?from=2026-01-01&to=2026-03-02")
    assert summary.get_json()["totals"] == {
        "sessions": 0,
        "minutes": 0,
        "assessments": 0,
        "minutes_per_assessment": None,
    }


def test_a_reading_heartbeat_is_stored_as_reported_by_the_client(app: Flask, clock: Clock) -> None:
    tutor = login(app, "tutor1")
    clock.set(T0)
    created = report(
        tutor, 201, action="get-submission-details", unit_id=1, project_id=1, task_id=1
    )
    assert created["source"] == "client"
    late = (T0 - timedelta(seconds=30)).isoformat()
    report(tutor, 201, action="inbox", unit_id=1, at=late)  # within the backdating window
    [a, b] = sorted(activities(app), key=lambda x: x.created_at)
    assert (a.source, b.source) == ("client", "client")
    [s] = sessions(app)
    assert s.start_time == T0 - timedelta(seconds=30)  # the late one moved the start back
    convenor = login(app, "convenor")
    [row] = convenor.get(f"{P}/units/1/sessions?from=2026-03-02&to=2026-03-02").get_json()[
        "sessions"
    ]
    assert (row["client_activities"], row["assessments"]) == (2, 0)
    detail = convenor.get(f"{P}/sessions/{s.id}").get_json()
    assert {x["source"] for x in detail["activity_list"]} == {"client"}
    csv_text = convenor.get(f"{P}/units/1/sessions?from=2026-03-02&to=2026-03-02&format=csv")
    header, line = csv_text.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert dict(zip(header.split(","), line.split(","), strict=True))["client_activities"] == "2"


def test_tracked_endpoints_are_marked_as_the_server(app: Flask, clock: Clock) -> None:
    tutor = login(app, "tutor1")
    tutor.put("/units/1/projects/1/tasks/1", json={"status": "complete"})
    [a] = activities(app)
    assert (a.action, a.source) == ("assessing", "server")


def test_ids_must_belong_to_the_unit(app: Flask, clock: Clock) -> None:
    """tutor9 is staff of unit 2 only; unit 1's task 1 is not unit 2's to report."""
    other = login(app, "tutor9")
    body = report(other, 400, action="get-submission-details", unit_id=2, task_id=1)
    assert body["error"]["field"] == "task_id"
    tutor = login(app, "tutor1")
    # a task of another project than the one named, and a definition of another task
    report(tutor, 400, action="get-submission-details", unit_id=1, project_id=2, task_id=1)
    report(tutor, 400, action="get-submission-details", unit_id=1, task_id=1, task_definition_id=2)
    assert activities(app) == []


def test_without_a_target_loader_a_client_may_name_no_ids(
    app: Flask, clock: Clock, monkeypatch: Any
) -> None:
    monkeypatch.setattr(tutor_times, "_target_loader", None)
    tutor = login(app, "tutor1")
    body = report(tutor, 400, action="inbox", unit_id=1, task_id=1)
    assert "target_loader" in body["error"]["message"]
    report(tutor, 201, action="inbox", unit_id=1)  # no ids: nothing to confirm
    assert len(activities(app)) == 1


def test_a_unit_that_does_not_exist_is_a_404_not_a_retry(app: Flask, clock: Clock) -> None:
    """An admin is staff everywhere; the unit still has to exist (a foreign key)."""
    body = report(login(app, "admin"), 404, action="inbox", unit_id=999)
    assert body["error"]["field"] == "unit_id"
    assert sessions(app) == []
