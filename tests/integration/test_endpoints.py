"""The report endpoints over HTTP: golden numbers, CSV, validation, and who may see what."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from demo.extensions import tutor_times

from ..conftest import Clock, activities, login, sessions

P = "/tutor-times"
RANGE = "from=2026-03-02&to=2026-03-03"


def get(client: FlaskClient, path: str, status: int = 200) -> Any:
    r = client.get(P + path)
    assert r.status_code == status, r.get_data(as_text=True)
    return r.get_json() if r.is_json else r.get_data(as_text=True)


def table(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


# -- golden numbers ------------------------------------------------------------------------


def test_summary(scenario: Flask) -> None:
    body = get(login(scenario, "convenor"), f"/units/1/summary?{RANGE}")
    assert body["range"] == {
        "start": "2026-03-02T00:00:00Z",
        "end": "2026-03-04T00:00:00Z",
        "tz": "UTC",
    }
    assert [
        (t["marker_id"], t["sessions"], t["minutes"], t["assessments"], t["minutes_per_assessment"])
        for t in body["tutors"]
    ] == [
        (3, 3, 49, 5, 9.8),
        (4, 2, 8, 2, 4.0),
    ]
    assert body["totals"] == {
        "sessions": 5,
        "minutes": 57,
        "assessments": 7,
        "minutes_per_assessment": 8.1,
    }


def test_tasks_share_each_sessions_minutes_among_its_assessments(scenario: Flask) -> None:
    body = get(login(scenario, "convenor"), f"/units/1/tasks?{RANGE}")
    # definition 1: 20/2 (09:00) + 14/1 (the second IP) + 20/2 + 20/2 (across midnight) = 44
    # definition 2: 20/2 (09:20) + 7/2 + 7/2 (the open session, 7 minutes so far) = 17
    assert body["tasks"] == [
        {
            "task_definition_id": 1,
            "assessments": 4,
            "tasks": 3,
            "markers": 1,
            "estimated_minutes": 44.0,
        },
        {
            "task_definition_id": 2,
            "assessments": 3,
            "tasks": 2,
            "markers": 2,
            "estimated_minutes": 17.0,
        },
    ]


def test_timeline_by_utc_day(scenario: Flask) -> None:
    body = get(login(scenario, "convenor"), f"/units/1/timeline?{RANGE}")
    assert body["bucket"] == "day"
    assert body["buckets"] == [
        # tutor 3: 29 merged + 20 across midnight (counted on the day it started); tutor 4: 1
        {
            "start": "2026-03-02",
            "start_time": "2026-03-02T00:00:00Z",
            "minutes": 50,
            "sessions": 4,
            "assessments": 5,
        },
        {
            "start": "2026-03-03",
            "start_time": "2026-03-03T00:00:00Z",
            "minutes": 7,
            "sessions": 1,
            "assessments": 2,
        },
    ]


def test_timeline_in_a_time_zone(scenario: Flask) -> None:
    # Melbourne is UTC+11 in March: 23:50 UTC is 10:50 the next morning there
    body = get(login(scenario, "convenor"), f"/units/1/timeline?{RANGE}&tz=Australia/Melbourne")
    assert body["range"]["start"] == "2026-03-01T13:00:00Z"
    assert [
        (b["start"], b["start_time"], b["minutes"], b["sessions"], b["assessments"])
        for b in body["buckets"]
    ] == [
        ("2026-03-02", "2026-03-01T13:00:00Z", 30, 3, 3),
        ("2026-03-03", "2026-03-02T13:00:00Z", 27, 2, 4),
    ]


def test_timeline_by_week(scenario: Flask) -> None:
    body = get(
        login(scenario, "convenor"), "/units/1/timeline?from=2026-02-23&to=2026-03-08&bucket=week"
    )
    # 2026-03-02 is a Monday; the session of 2026-02-28 falls in the week before
    assert [
        (b["start"], b["minutes"], b["sessions"], b["assessments"]) for b in body["buckets"]
    ] == [
        ("2026-02-23", 1, 1, 1),
        ("2026-03-02", 57, 5, 7),
    ]


def test_sessions_page(scenario: Flask) -> None:
    client = login(scenario, "convenor")
    body = get(client, f"/units/1/sessions?{RANGE}&per_page=2")
    assert (body["total"], body["page"], body["per_page"]) == (5, 1, 2)
    newest = body["sessions"][0]
    assert newest == {
        "id": newest["id"],
        "marker_id": 4,
        "unit_id": 1,
        "ip_address": "10.0.0.3",
        "start_time": "2026-03-03T00:20:00Z",
        "end_time": None,
        "last_activity": "2026-03-03T00:27:30Z",
        "duration_minutes": 7,
        "active": True,
        "assessments": 2,
        "activities": {"assessing": 2},
        "client_activities": 0,
    }
    assert body["sessions"][1]["start_time"] == "2026-03-02T23:50:00Z"
    assert body["sessions"][1]["end_time"] == "2026-03-03T00:10:00Z"
    last = get(client, f"/units/1/sessions?{RANGE}&per_page=2&page=3")
    assert [s["start_time"] for s in last["sessions"]] == ["2026-03-02T09:00:00Z"]
    assert get(client, f"/units/1/sessions?{RANGE}&page=9")["sessions"] == []


def test_session_detail(scenario: Flask) -> None:
    client = login(scenario, "convenor")
    first = get(client, f"/units/1/sessions?{RANGE}&page=5&per_page=1")["sessions"][0]
    body = get(client, f"/sessions/{first['id']}")
    assert (body["duration_minutes"], body["activities"]) == (20, {"assessing": 2, "inbox": 1})
    assert [(a["action"], a["created_at"], a["task_id"]) for a in body["activity_list"]] == [
        ("assessing", "2026-03-02T09:00:00Z", 11),
        ("inbox", "2026-03-02T09:10:00Z", None),
        ("assessing", "2026-03-02T09:20:00Z", 21),
    ]
    get(client, "/sessions/999999", 404)


def test_the_default_range_is_the_last_seven_days(scenario: Flask, clock: Clock) -> None:
    client = login(scenario, "convenor")
    body = get(client, "/units/1/summary")
    # today is 2026-03-03: from 2026-02-25, so the session of 2026-02-28 is in
    assert body["range"]["start"] == "2026-02-25T00:00:00Z"
    assert body["totals"]["sessions"] == 6
    clock.set(datetime(2026, 3, 9, 12, tzinfo=timezone.utc))
    assert get(client, "/units/1/summary")["totals"]["sessions"] == 1  # the open one only


def test_a_to_datetime_is_inclusive(scenario: Flask) -> None:
    client = login(scenario, "convenor")
    body = get(client, "/units/1/sessions?from=2026-03-02T09:00:00Z&to=2026-03-02T09:15:00Z")
    assert [s["start_time"] for s in body["sessions"]] == [
        "2026-03-02T09:15:00Z",
        "2026-03-02T09:00:00Z",
    ]
    # a naive datetime is read in tz: 20:00 in Melbourne is 09:00 UTC
    body = get(
        client, "/units/1/sessions?from=2026-03-02T20:00&to=2026-03-02T20:00&tz=Australia/Melbourne"
    )
    assert [s["start_time"] for s in body["sessions"]] == ["2026-03-02T09:00:00Z"]


# -- CSV -------------------------------------------------------------------------------------


def test_sessions_csv(scenario: Flask) -> None:
    r = login(scenario, "convenor").get(
        f"{P}/units/1/sessions?{RANGE}&format=csv&tz=Australia/Melbourne"
    )
    assert r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"] == 'attachment; filename="unit-1-sessions.csv"'
    rows = table(r.get_data(as_text=True))
    assert len(rows) == 5
    midnight = rows[1]
    assert {
        k: midnight[k]
        for k in (
            "marker_id",
            "ip_address",
            "start_date",
            "start_time",
            "end_date",
            "end_time",
            "timezone",
            "duration_minutes",
            "duration_hours",
            "active",
            "assessments",
            "comments",
            "submissions_opened",
            "activities",
        )
    } == {
        "marker_id": "3",
        "ip_address": "10.0.0.1",
        "start_date": "2026-03-03",
        "start_time": "10:50:00",
        "end_date": "2026-03-03",
        "end_time": "11:10:00",
        "timezone": "Australia/Melbourne",
        "duration_minutes": "20",
        "duration_hours": "0.3",
        "active": "no",
        "assessments": "2",
        "comments": "1",
        "submissions_opened": "0",
        "activities": "3",
    }
    assert (rows[0]["end_date"], rows[0]["active"]) == ("", "yes")


def test_summary_tasks_and_timeline_csv(scenario: Flask) -> None:
    client = login(scenario, "convenor")
    summary = table(get(client, f"/units/1/summary?{RANGE}&format=csv"))
    assert [
        (r["marker_id"], r["minutes"], r["hours"], r["minutes_per_assessment"]) for r in summary
    ] == [("3", "49", "0.8", "9.8"), ("4", "8", "0.1", "4.0"), ("total", "57", "0.9", "8.1")]
    tasks = table(get(client, f"/units/1/tasks?{RANGE}&format=csv"))
    assert [
        (r["task_definition_id"], r["estimated_minutes"], r["estimated_hours"]) for r in tasks
    ] == [("1", "44.0", "0.7"), ("2", "17.0", "0.3")]
    timeline = table(get(client, f"/units/1/timeline?{RANGE}&format=csv"))
    assert [(r["start_date"], r["minutes"], r["sessions"], r["assessments"]) for r in timeline] == [
        ("2026-03-02", "50", "4", "5"),
        ("2026-03-03", "7", "1", "2"),
    ]


# -- daylight saving ---------------------------------------------------------------------------


def test_a_session_late_on_the_long_day_stays_in_that_day(app: Flask, clock: Clock) -> None:
    # 23:30 local on 2026-04-05 in Melbourne is 13:30 UTC: a fixed 24-hour step from
    # midnight (13:00 UTC the day before) would put it into the next day
    with app.app_context():
        for t in (
            datetime(2026, 4, 4, 13, 30, tzinfo=timezone.utc),
            datetime(2026, 4, 5, 13, 30, tzinfo=timezone.utc),
        ):
            clock.set(t)
            tutor_times.record_activity("assessing", marker_id=3, unit_id=1, ip_address="10.0.0.1")
    clock.set(datetime(2026, 4, 7, tzinfo=timezone.utc))
    body = get(
        login(app, "convenor"),
        "/units/1/timeline?from=2026-04-05&to=2026-04-06&tz=Australia/Melbourne",
    )
    assert [(b["start"], b["sessions"]) for b in body["buckets"]] == [
        ("2026-04-05", 2),
        ("2026-04-06", 0),
    ]


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=yesterday", "from"),
        ("to=2026-02-30", "to"),
        ("from=2026-03-05&to=2026-03-01", "to"),
        ("tz=Mars/Olympus", "tz"),
        ("tz=", "tz"),
        ("tz=../../etc/passwd", "tz"),
        ("format=xlsx", "format"),
        ("page=0", "page"),
        ("per_page=501", "per_page"),
        ("per_page=ten", "per_page"),
        ("marker_id=-3", "marker_id"),
        ("marker_id=99999999999999999999", "marker_id"),
        ("from=0001-01-01&tz=Asia/Tokyo", "from"),
        ("to=9999-12-31", "to"),
    ],
)
def test_bad_parameters_are_a_400_naming_the_field(app: Flask, query: str, field: str) -> None:
    r = login(app, "convenor").get(f"{P}/units/1/sessions?{query}")
    assert r.status_code == 400
    error = r.get_json()["error"]
    assert (error["status"], error["field"]) == (400, field)
    assert error["message"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/units/abc/summary", "unit_id"),
        ("/units/0/summary", "unit_id"),
        ("/units/-1/tasks", "unit_id"),
        ("/units/1/timeline?bucket=month", "bucket"),
        ("/units/1/timeline?from=2020-01-01&to=2026-01-01", "to"),  # too many day buckets
        ("/sessions/9223372036854775808", "session_id"),
        ("/me/sessions?unit_id=x", "unit_id"),
    ],
)
def test_bad_paths_are_a_400_naming_the_field(app: Flask, path: str, field: str) -> None:
    r = login(app, "convenor").get(P + path)
    assert r.status_code == 400
    assert r.get_json()["error"]["field"] == field


def test_a_long_range_works_by_week(app: Flask) -> None:
    body = get(
        login(app, "convenor"), "/units/1/timeline?from=2020-01-01&to=2026-01-01&bucket=week"
    )
    assert len(body["buckets"]) == 314


# -- POST /activities ----------------------------------------------------------------------------


def test_a_tutor_reports_a_heartbeat(app: Flask, clock: Clock) -> None:
    client = login(app, "tutor1")
    r = client.post(
        f"{P}/activities",
        json={"action": "get-submission-details", "unit_id": 1, "task_id": 4},
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert r.status_code == 201
    body = r.get_json()
    assert (body["marker_id"], body["unit_id"], body["action"], body["task_id"]) == (
        3,
        1,
        "get-submission-details",
        4,
    )
    assert body["created_at"] == "2026-03-02T09:00:00Z"
    [session] = sessions(app)
    assert (session.id, session.marker_id, session.ip_address) == (
        body["marking_session_id"],
        3,
        "10.1.2.3",
    )


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"action": "delete-everything", "unit_id": 1}, 400, "action"),
        ({"action": "inbox"}, 400, "unit_id"),
        ({"action": "inbox", "unit_id": "one"}, 400, "unit_id"),
        ({"action": "inbox", "unit_id": -1}, 400, "unit_id"),
        ({"action": "inbox", "unit_id": 1, "task_id": 1.5}, 400, "task_id"),
        ({"action": "inbox", "unit_id": 1, "at": "2026-03-02T09:00:00"}, 400, "at"),
        ({"action": "inbox", "unit_id": 1, "at": "2026-03-02T10:00:00Z"}, 400, "at"),
        ({"action": "inbox", "unit_id": 1, "marker_id": 4}, 400, "marker_id"),
        ({"action": "inbox", "unit_id": 1, "ip_address": "1.2.3.4"}, 400, "ip_address"),
        (["inbox"], 400, "body"),
        ({"action": "inbox", "unit_id": 2}, 403, "unit_id"),
    ],
)
def test_a_bad_report_is_refused_and_writes_nothing(
    app: Flask, payload: Any, status: int, field: str
) -> None:
    r = login(app, "tutor1").post(f"{P}/activities", json=payload)
    assert r.status_code == status
    assert r.get_json()["error"]["field"] == field
    assert activities(app) == [] and sessions(app) == []


def test_a_body_that_is_not_json_is_a_400(app: Flask) -> None:
    r = login(app, "tutor1").post(
        f"{P}/activities", data="action=inbox", content_type="application/x-www-form-urlencoded"
    )
    assert r.status_code == 400
    assert r.get_json()["error"]["field"] == "body"


def test_students_are_not_tracked(app: Flask) -> None:
    r = login(app, "student1").post(f"{P}/activities", json={"action": "inbox", "unit_id": 1})
    assert r.status_code == 403
    assert activities(app) == []


# -- OpenAPI ----------------------------------------------------------------------------------


def test_the_openapi_document_lists_every_endpoint(app: Flask) -> None:
    doc = app.test_client().get(f"{P}/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert {(path, method) for path, item in doc["paths"].items() for method in item} == {
        (f"{P}/units/{{unit_id}}/active", "get"),
        (f"{P}/units/{{unit_id}}/sessions", "get"),
        (f"{P}/units/{{unit_id}}/summary", "get"),
        (f"{P}/units/{{unit_id}}/tasks", "get"),
        (f"{P}/units/{{unit_id}}/timeline", "get"),
        (f"{P}/sessions/{{session_id}}", "get"),
        (f"{P}/me/sessions", "get"),
        (f"{P}/activities", "post"),
        (f"{P}/health", "get"),
        (f"{P}/metrics", "get"),
        (f"{P}/openapi.json", "get"),
    }
    activities_post = doc["paths"][f"{P}/activities"]["post"]["responses"]
    assert {"409", "422"} <= set(activities_post)
    per_page = next(
        p
        for p in doc["paths"][f"{P}/units/{{unit_id}}/sessions"]["get"]["parameters"]
        if p["name"] == "per_page"
    )
    assert per_page["schema"]["maximum"] == 500
    assert (
        "text/csv"
        in doc["paths"][f"{P}/units/{{unit_id}}/summary"]["get"]["responses"]["200"]["content"]
    )


# -- who may see what ------------------------------------------------------------------------

UNIT_REPORTS = ["active", "sessions", "summary", "tasks", "timeline"]
# user -> status for unit 1's reports (tutor9 tutors unit 2 only; student1 studies unit 1)
WHO = {"admin": 200, "convenor": 200, "tutor1": 200, "tutor9": 403, "student1": 403, None: 401}


def client_of(app: Flask, username: str | None) -> FlaskClient:
    return login(app, username) if username else app.test_client()


@pytest.mark.slow
@pytest.mark.parametrize("report", UNIT_REPORTS)
@pytest.mark.parametrize(("username", "status"), WHO.items())
def test_the_role_matrix(scenario: Flask, report: str, username: str | None, status: int) -> None:
    query = "" if report == "active" else f"?{RANGE}"  # live now: no range to choose
    r = client_of(scenario, username).get(f"{P}/units/1/{report}{query}")
    assert r.status_code == status
    assert r.is_json
    if status != 200:
        assert r.get_json()["error"]["status"] == status
        return
    body = r.get_json()
    rows = body.get("sessions") or body.get("tutors") or []
    markers = {row["marker_id"] for row in rows}
    if username == "tutor1":
        assert markers <= {3}  # their own rows only
    elif report != "tasks" and report != "timeline":
        assert markers == ({4} if report == "active" else {3, 4})


@pytest.mark.parametrize("report", UNIT_REPORTS[1:])
def test_a_tutor_asking_for_another_tutor_gets_403(scenario: Flask, report: str) -> None:
    client = login(scenario, "tutor1")
    r = client.get(f"{P}/units/1/{report}?{RANGE}&marker_id=4")
    assert r.status_code == 403
    assert r.get_json()["error"]["field"] == "marker_id"
    assert client.get(f"{P}/units/1/{report}?{RANGE}&marker_id=3").status_code == 200


def test_a_tutors_numbers_are_their_own(scenario: Flask) -> None:
    mine = get(login(scenario, "tutor2"), f"/units/1/summary?{RANGE}")
    assert [t["marker_id"] for t in mine["tutors"]] == [4]
    assert mine["totals"]["minutes"] == 8
    tasks = get(login(scenario, "tutor2"), f"/units/1/tasks?{RANGE}")["tasks"]
    assert tasks == [
        {
            "task_definition_id": 2,
            "assessments": 2,
            "tasks": 1,
            "markers": 1,
            "estimated_minutes": 7.0,
        }
    ]
    timeline = get(login(scenario, "tutor2"), f"/units/1/timeline?{RANGE}")["buckets"]
    assert [b["minutes"] for b in timeline] == [1, 7]


@pytest.mark.slow
@pytest.mark.parametrize(("username", "status"), WHO.items())
def test_session_detail_matrix(scenario: Flask, username: str | None, status: int) -> None:
    with scenario.app_context():
        ids = {s.marker_id: s.id for s in sessions(scenario) if s.unit_id == 1}
    r = client_of(scenario, username).get(f"{P}/sessions/{ids[3]}")
    # a session the user may not see answers as if it did not exist
    assert r.status_code == (404 if status == 403 else status)
    if username == "tutor1":  # their own; not tutor 4's
        assert client_of(scenario, username).get(f"{P}/sessions/{ids[4]}").status_code == 404


def test_a_convenor_of_one_unit_cannot_open_another_units_session(scenario: Flask) -> None:
    other = next(s.id for s in sessions(scenario) if s.unit_id == 2)
    assert login(scenario, "convenor").get(f"{P}/sessions/{other}").status_code == 404
    assert login(scenario, "admin").get(f"{P}/sessions/{other}").status_code == 200


@pytest.mark.parametrize(("username", "count"), [("tutor1", 4), ("tutor2", 2), ("student1", 0)])
def test_my_sessions_are_my_own_across_units(scenario: Flask, username: str, count: int) -> None:
    body = get(login(scenario, username), f"/me/sessions?{RANGE}")
    assert body["total"] == count
    assert {s["marker_id"] for s in body["sessions"]} <= {body["marker_id"]}
    if username == "tutor1":
        assert {s["unit_id"] for s in body["sessions"]} == {1, 2}
        assert get(login(scenario, username), f"/me/sessions?{RANGE}&unit_id=2")["total"] == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/me/sessions"),
        ("GET", "/sessions/1"),
        ("POST", "/activities"),
        ("GET", "/units/1/summary?per_page=9999"),
    ],
)
def test_anonymous_requests_get_401_before_any_validation(
    app: Flask, method: str, path: str
) -> None:
    r = app.test_client().open(P + path, method=method, json={"action": "inbox", "unit_id": 1})
    assert r.status_code == 401
    assert r.get_json()["error"]["status"] == 401
