"""What the endpoints refuse, and how: every refusal is a JSON 4xx naming what is wrong;
nothing a client sends gives a 5xx, and no answer tells apart what the user may not see."""

from __future__ import annotations

import io
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from demo.extensions import db
from tutor_times.web.ranges import ZONES
from tutor_times.web.views import MAX_BODY_BYTES

from ..conftest import built, login, sessions

P = "/tutor-times"
RANGE_REPORTS = ["summary", "sessions", "tasks", "timeline"]


def error_of(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.get_data(as_text=True)[:500]
    assert r.is_json
    error: dict[str, Any] = r.get_json()["error"]
    assert error["status"] == status and error["message"]
    return error


# -- dates at the edge of the calendar -------------------------------------------------------


@pytest.mark.parametrize("report", RANGE_REPORTS)
@pytest.mark.parametrize("to", ["0002-01-03", "0002-01-01T05:00:00%2B00:00"])
def test_a_default_range_before_year_one_is_a_400(app: Flask, report: str, to: str) -> None:
    r = login(app, "convenor").get(f"{P}/units/1/{report}?to={to}")
    assert error_of(r, 400)["field"] == "from"


def test_an_instant_with_an_offset_is_taken_as_given_at_the_ends_of_the_calendar(
    app: Flask,
) -> None:
    # 9998-12-31T23:59:59Z is accepted, though it is in year 9999 in Kiritimati: an
    # instant is taken as given, never converted there
    r = login(app, "convenor").get(
        f"{P}/units/1/summary?from=0002-01-01T00:00:00Z&to=9998-12-31T23:59:59Z"
        "&tz=Pacific/Kiritimati"
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["range"] == {
        "start": "0002-01-01T00:00:00Z",
        "end": "9998-12-31T23:59:59.000001Z",
        "tz": "Pacific/Kiritimati",
    }


@pytest.mark.parametrize("username", ["tutor1", "student1"])
def test_my_sessions_before_year_one_is_a_400(app: Flask, username: str) -> None:
    r = login(app, username).get(f"{P}/me/sessions?to=0002-01-03")
    assert error_of(r, 400)["field"] == "from"


# -- bodies: size, depth, strict types ------------------------------------------------------


class Unreadable(io.RawIOBase):
    """A request body that fails the test if anyone reads it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise AssertionError("the body was read")


def test_a_declared_huge_body_is_a_413_without_reading_it(app: Flask) -> None:
    r = login(app, "tutor1").post(
        f"{P}/activities",
        content_type="application/json",
        environ_overrides={"wsgi.input": Unreadable(), "CONTENT_LENGTH": str(200 * 1024**2)},
    )
    assert error_of(r, 413)["field"] == "body"
    assert sessions(app) == []


def test_the_body_cap_is_configurable(clock: Any) -> None:
    body = {"action": "inbox", "unit_id": 1, "project_id": None}
    with built("sqlite", TUTOR_TIMES_MAX_BODY_BYTES=40) as app:
        r = login(app, "tutor1").post(f"{P}/activities", json=body)
        assert error_of(r, 413)["field"] == "body"
    with built("sqlite", TUTOR_TIMES_MAX_BODY_BYTES=4096) as app:
        assert login(app, "tutor1").post(f"{P}/activities", json=body).status_code == 201


class Endless(io.RawIOBase):
    """A streamed body with no length: spaces, then a valid object, forever. Counts reads."""

    def __init__(self) -> None:
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = len(buffer)
        buffer[:n] = b" " * n
        self.sent += n
        return n


def test_a_streamed_body_stops_at_the_cap(app: Flask) -> None:
    body = Endless()
    r = login(app, "tutor1").post(
        f"{P}/activities",
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input": body, "wsgi.input_terminated": True},
    )
    assert error_of(r, 413)["field"] == "body"
    assert body.sent <= 2 * MAX_BODY_BYTES


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,  # over the cap
        "[" * (MAX_BODY_BYTES - 10),  # under it, and deeper than the parser can go
        '{"a":' * 10_000,
        '{"action": "inbox", "unit_id": 1' + ', "x": [' * 5000,
    ],
)
def test_deeply_nested_bodies_are_refused(app: Flask, text: str) -> None:
    r = login(app, "tutor1").post(f"{P}/activities", data=text, content_type="application/json")
    assert r.status_code in (400, 413)
    assert error_of(r, r.status_code)["field"] == "body"


@pytest.mark.parametrize(
    "text",
    [
        '{"action": "inbox", "unit_id": 1, "unit_id": 2}',  # which one? neither
        '{"action": "inbox", "unit_id": NaN}',
        '{"action": "inbox", "unit_id": 1' + "0" * 5000 + "}",
        b'{"action": "\xff", "unit_id": 1}',
    ],
)
def test_malformed_json_is_a_400(app: Flask, text: str | bytes) -> None:
    r = login(app, "tutor1").post(f"{P}/activities", data=text, content_type="application/json")
    assert error_of(r, 400)["field"] in ("body", "unit_id")
    assert sessions(app) == []


@pytest.mark.slow
@pytest.mark.parametrize("field", ["unit_id", "project_id", "task_id", "task_definition_id"])
@pytest.mark.parametrize("value", [True, False, "1", 1.0, "１", [1], {"id": 1}])
def test_body_ids_are_strict_integers(app: Flask, field: str, value: Any) -> None:
    payload = {"action": "inbox", "unit_id": 1, field: value}
    r = login(app, "tutor1").post(f"{P}/activities", json=payload)
    assert error_of(r, 400)["field"] == field
    assert sessions(app) == []


@pytest.mark.parametrize(
    "value",
    [1_772_442_000, True, "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", []],
)
def test_at_is_an_iso_string_in_range(app: Flask, value: Any) -> None:
    r = login(app, "tutor1").post(
        f"{P}/activities", json={"action": "inbox", "unit_id": 1, "at": value}
    )
    assert error_of(r, 400)["field"] == "at"


# -- query strings: digits, zones, nothing unknown --------------------------------------------


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/units/1/sessions?page=1.0", "page"),
        ("/units/1/sessions?per_page=+5", "per_page"),
        ("/units/1/sessions?page=%201", "page"),
        ("/units/1/sessions?page=1_0", "page"),
        ("/units/1/sessions?page=%D9%A1", "page"),  # an Arabic-Indic one
        ("/units/1/summary?marker_id=3.0", "marker_id"),
        ("/units/1/summary?marker_id=" + "9" * 5000, "marker_id"),
        ("/me/sessions?unit_id=1e0", "unit_id"),
        ("/units/1.0/summary", "unit_id"),
        ("/units/+1/summary", "unit_id"),
        ("/sessions/1.0", "session_id"),
    ],
)
def test_integer_parameters_are_decimal_digits(app: Flask, path: str, field: str) -> None:
    assert error_of(login(app, "convenor").get(P + path), 400)["field"] == field


@pytest.mark.parametrize(
    "tz", ["localtime", "posixrules", "Factory", "right/UTC", "posix/Europe/Berlin", "utc"]
)
@pytest.mark.parametrize("report", ["summary", "timeline"])
def test_only_canonical_zone_names_are_accepted(app: Flask, tz: str, report: str) -> None:
    r = login(app, "convenor").get(f"{P}/units/1/{report}?tz={tz}")
    assert error_of(r, 400)["field"] == "tz"


@pytest.mark.real
def test_postgresql_knows_every_accepted_zone(app: Flask) -> None:
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return  # the question is PostgreSQL's; its run is the postgres one
    with app.app_context(), db.engine.connect() as conn:
        known = set(conn.scalars(sa.text("SELECT name FROM pg_timezone_names")))
    assert ZONES - known == set()


@pytest.mark.parametrize(
    ("username", "path", "field"),
    [
        ("tutor1", "/me/sessions?marker_id=4", "marker_id"),
        ("convenor", "/units/1/active?format=csv", "format"),
        ("convenor", "/units/1/summary?bucket=week", "bucket"),
        ("convenor", "/units/1/summary?from_=2026-03-01", "from_"),
        ("convenor", "/units/1/sessions?page=1&page=2", "page"),
        ("convenor", "/sessions/1?verbose=1", "verbose"),
        ("convenor", "/openapi.json?x=1", "x"),
    ],
)
def test_unknown_or_repeated_parameters_are_a_400(
    app: Flask, username: str, path: str, field: str
) -> None:
    assert error_of(login(app, username).get(P + path), 400)["field"] == field


# -- routing errors under the prefix are ours, in JSON ----------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "", 404),
        ("GET", "/units/1/nope", 404),
        ("DELETE", "/openapi.json", 405),
        ("PUT", "/units/1/summary", 405),
        ("GET", "/activities", 405),
    ],
)
def test_routing_errors_under_the_prefix_are_json(
    app: Flask, method: str, path: str, status: int
) -> None:
    r = app.test_client().open(P + path, method=method)
    error_of(r, status)
    if status == 405:
        assert r.headers["Allow"]


@pytest.mark.parametrize("path", ["/nope", "/tutor-timesheet", "/tutor-times-x/1"])
def test_the_hosts_own_404s_are_left_alone(app: Flask, path: str) -> None:
    r = app.test_client().get(path)
    assert r.status_code == 404
    assert not (r.is_json and "error" in (r.get_json() or {}))


# -- a session the user may not see is indistinguishable from none ----------------------------


@pytest.mark.parametrize(
    ("username", "whose"),
    [("tutor1", (4, 1)), ("tutor9", (3, 1)), ("student1", (3, 1)), ("convenor", (3, 2))],
)
def test_a_session_you_may_not_see_is_a_404_like_a_missing_one(
    scenario: Flask, username: str, whose: tuple[int, int]
) -> None:
    theirs = next(s.id for s in sessions(scenario) if (s.marker_id, s.unit_id) == whose)
    missing = max(s.id for s in sessions(scenario)) + 1000
    client = login(scenario, username)
    hidden = error_of(client.get(f"{P}/sessions/{theirs}"), 404)
    absent = error_of(client.get(f"{P}/sessions/{missing}"), 404)
    assert hidden == absent


def test_the_openapi_document_lists_itself(app: Flask) -> None:
    doc = app.test_client().get(f"{P}/openapi.json").get_json()
    operation = doc["paths"][f"{P}/openapi.json"]["get"]
    assert "200" in operation["responses"]
    assert "401" not in operation["responses"]  # it is public
