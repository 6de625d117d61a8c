"""Fuzz of every endpoint: property-based, driven by the published OpenAPI document (no
input gives a 5xx, and every response matches the schema documented for it), and a
deterministic sweep of extreme values (the ends of the calendar, every zone name, huge and
deep bodies, every JSON type in every body field) that random generation rarely reaches."""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from demo.extensions import db, tutor_times
from tutor_times.web.views import MAX_BODY_BYTES, api

from ..conftest import BACKENDS, build, built, login, reset_tables

P = "/tutor-times"

schema = schemathesis.openapi.from_dict(api.openapi("/tutor-times"))


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


#: the host's timetable while fuzzing: classes of one tutor, of the whole unit, and at the
#: ends of the calendar, so every report has its R12 split to show
CLASSES = [
    (
        3,
        datetime(2026, 3, 2, 8, tzinfo=timezone.utc),
        datetime(2026, 3, 2, 10, tzinfo=timezone.utc),
    ),
    (
        None,
        datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc),
        datetime(2026, 3, 3, tzinfo=timezone.utc),
    ),
    (3, datetime(1, 1, 1, tzinfo=timezone.utc), datetime(1, 1, 1, 0, 20, tzinfo=timezone.utc)),
    (
        None,
        datetime(9999, 12, 31, 23, 30, tzinfo=timezone.utc),
        datetime.max.replace(tzinfo=timezone.utc),
    ),
]


@pytest.fixture(autouse=True)
def _host_timetable() -> Iterator[None]:
    """The host's class_times_loader and student_count_loader, on every fuzzed request."""
    tutor_times.class_times_loader(
        lambda unit, start, end: [c for c in CLASSES if unit == 1 and c[1] < end and c[2] > start]
    )
    tutor_times.student_count_loader(lambda unit, marker: None if marker == 4 else 7)
    yield
    tutor_times.forget_workload_loaders()


@pytest.fixture(params=["convenor", "tutor1"])
def as_user(request: pytest.FixtureRequest, backend_name: str) -> Iterator[tuple[Flask, str]]:
    """An app and the session cookie of a user who sees everything, or only their own."""
    for app in build(backend_name):
        cookie = login(app, str(request.param)).get_cookie("session")
        assert cookie is not None
        yield app, cookie.value


def test_the_published_document_is_the_one_fuzzed(as_user: tuple[Flask, str]) -> None:
    app, _ = as_user
    assert app.test_client().get("/tutor-times/openapi.json").get_json() == schema.raw_schema


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,  # the app is shared on purpose: data accumulates
    ],
)
@pytest.mark.slow
def test_no_input_gives_a_server_error_and_every_reply_matches_its_schema(
    case: Any, as_user: tuple[Flask, str]
) -> None:
    app, cookie = as_user
    # Some valid-looking input is refused by rules OpenAPI cannot state (from <= to, a time
    # zone that must exist, an allowed action): that 400 is right, so that check is off.
    case.call_and_validate(
        app=app, cookies={"session": cookie}, excluded_checks=[positive_data_acceptance]
    )


# -- extreme values, every endpoint, deterministically ------------------------------------------

#: dates and datetimes at the ends of the calendar, in the widest UTC offsets there are
EXTREME_WHENS = [
    "0001-01-01",
    "0001-01-07",
    "9999-12-25",
    "9999-12-31",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-12:00",
    "0001-01-02T00:00",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59.999999+14:00",
    "9999-12-31T23:59:59.999999-12:00",
    "9999-12-31T23:59",
    "2026-03-02T09:00:00+05:45",
]
#: zones at the ends of the offsets
FEW_ZONES = ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"]
FIRSTS = ["0001-01-01", "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-12:00", "2026-03-02"]
LASTS = ["0001-01-07", "9999-12-31", "9999-12-31T23:59:59.999999+14:00", "9999-12-31T23:59"]
#: names Python may open but the endpoints refuse, and names that are no zone at all
REFUSED_ZONES = [
    "localtime",
    "posixrules",
    "Factory",
    "right/UTC",
    "right/Europe/Berlin",
    "posix/Europe/Berlin",
    "utc",
    " UTC",
    "Europe/../Europe/Berlin",
    "/etc/localtime",
    "Europe/Berlin\x00",
    "A" * 65,
]
RANGE_PATHS = [
    "/units/1/summary",
    "/units/1/sessions",
    "/units/1/tasks",
    "/units/1/timeline",
    "/me/sessions",
]
#: one of each JSON type, and the integers and strings at their edges
CONFUSED = [
    True,
    False,
    None,
    0,
    -1,
    2**63,
    10**400,
    1.0,
    1.5,
    1e308,
    "",
    "1",
    "x" * 10_000,
    "2026-03-02T09:00:00Z",
    [],
    [1],
    {},
    {"unit_id": 1},
]
BODY_FIELDS = ["action", "unit_id", "project_id", "task_id", "task_definition_id", "at"]
VALID_BODY = {"action": "inbox", "unit_id": 1}
D0 = datetime(1, 1, 1, tzinfo=timezone.utc)
D9 = datetime(9999, 12, 31, 23, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module", params=BACKENDS)
def extreme_app(request: pytest.FixtureRequest) -> Iterator[tuple[Flask, FlaskClient]]:
    """An app whose unit 1 holds sessions in years 1 and 9999 (and in 2026), and a
    convenor's client."""
    with built(str(request.param)) as app:
        reset_tables(app)
        ms = tutor_times.MarkingSession
        with app.app_context(), db.engine.begin() as conn:
            for start in (D0, D9, datetime(2026, 3, 2, 9, tzinfo=timezone.utc)):
                conn.execute(
                    sa.insert(ms).values(
                        marker_id=3,
                        unit_id=1,
                        ip_address="10.0.0.1",
                        start_time=start,
                        end_time=start + timedelta(minutes=50),
                        duration_minutes=50,
                        created_at=start,
                        updated_at=start,
                    )
                )
        yield app, login(app, "convenor")


def server_errors(
    client: FlaskClient, requests: Iterable[tuple[str, str, dict[str, Any]]]
) -> list[str]:
    """Send each (method, path, options) request; every answer below 500 must be our JSON
    (or a CSV download). Returns the requests that were answered otherwise."""
    bad = []
    for method, path, options in requests:
        r = client.open(P + path, method=method, **options)
        ours = r.is_json or r.mimetype == "text/csv"
        if r.status_code >= 500 or not ours:
            bad.append(f"{method} {path} {options!r:.200}: {r.status_code}")
        elif r.status_code >= 400:
            error = r.get_json()["error"]
            assert error["status"] == r.status_code and error["message"], (path, options)
    return bad


@pytest.mark.slow
def test_extreme_dates_on_every_range_endpoint(extreme_app: tuple[Flask, FlaskClient]) -> None:
    _, client = extreme_app
    every_report = [
        *((path, {}) for path in RANGE_PATHS),
        ("/units/1/timeline", {"bucket": "week"}),
        ("/units/1/sessions", {"format": "csv"}),
        ("/units/1/sessions", {"format": "csv", "style": "ontrack"}),
        ("/me/sessions", {"format": "csv", "style": "ontrack"}),
    ]
    requests = [
        ("GET", path, {"query_string": {side: when, "tz": tz, **extra}})
        for tz in FEW_ZONES
        for when in EXTREME_WHENS
        for side in ("from", "to")
        for path, extra in every_report
    ]
    # both ends at once: the reports that walk the range (buckets, CSV times)
    requests += [
        ("GET", path, {"query_string": {"from": first, "to": last, "tz": tz, **extra}})
        for tz in FEW_ZONES
        for first in FIRSTS
        for last in LASTS
        for path, extra in [every_report[0], every_report[3], *every_report[5:]]
    ]
    assert server_errors(client, requests) == []


@pytest.mark.slow
def test_every_zone_name_on_summary_and_timeline(extreme_app: tuple[Flask, FlaskClient]) -> None:
    _, client = extreme_app
    zones = sorted(zoneinfo.available_timezones()) + REFUSED_ZONES
    requests = [
        ("GET", path, {"query_string": {"tz": tz, "from": "2026-03-01", "to": "2026-03-03"}})
        for tz in zones
        for path in ("/units/1/summary", "/units/1/timeline")
    ]
    assert server_errors(client, requests) == []
    # the range ends, in the widest zones, in CSV too (times of years 1 and 9999)
    ends = [
        ("GET", "/units/1/sessions", {"query_string": {"tz": tz, "format": "csv", **q}})
        for tz in ("Pacific/Kiritimati", "Etc/GMT+12", "America/St_Johns")
        for q in (
            {"from": "0001-01-01T00:00:00Z", "to": "0001-01-02"},
            {"from": "9999-12-25", "to": "9999-12-31T23:59:59Z"},
        )
    ]
    assert server_errors(client, ends) == []


def test_type_confusion_in_every_body_field(extreme_app: tuple[Flask, FlaskClient]) -> None:
    app, _ = extreme_app
    client = login(app, "tutor1")
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/activities", {"json": {**VALID_BODY, field: value}})
        for field in BODY_FIELDS
        for value in CONFUSED
    ]
    requests += [("POST", "/activities", {"json": value}) for value in CONFUSED]
    assert server_errors(client, requests) == []


def test_huge_and_deep_bodies_on_every_endpoint(extreme_app: tuple[Flask, FlaskClient]) -> None:
    app, _ = extreme_app
    client = login(app, "tutor1")
    bodies = [
        "[" * 100_000,
        "[" * 60_000,
        '{"a":' * 20_000,
        '{"action": "inbox", "unit_id": 1, "x": ' + "[" * 30_000,
        "x" * (MAX_BODY_BYTES + 1),
        '{"action": "inbox", "unit_id": 1, "pad": "' + "x" * MAX_BODY_BYTES + '"}',
        "\x00" * 1000,
        "\ud800",
    ]
    requests = [
        (op.method, op.rule.replace("{unit_id}", "1").replace("{session_id}", "1"), options)
        for op in api.operations
        for text in bodies
        for options in (
            {"data": text.encode("utf-8", "surrogatepass"), "content_type": "application/json"},
            {"data": text.encode("utf-8", "surrogatepass"), "content_type": "text/plain"},
        )
    ]
    assert server_errors(client, requests) == []


def test_extreme_ids_in_every_path_and_query(extreme_app: tuple[Flask, FlaskClient]) -> None:
    _, client = extreme_app
    ids = [
        "0",
        "1",
        "-1",
        "01",
        "9223372036854775807",
        "9223372036854775808",
        "1e3",
        "1.0",
        "%00",
        "%F0%9F%98%80",
        "9" * 5000,
    ]
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/units/{i}/{report}", {})
        for i in ids
        for report in ("active", "summary", "sessions", "tasks", "timeline")
    ]
    requests += [("GET", f"/sessions/{i}", {}) for i in ids]
    requests += [
        ("GET", path, {"query_string": {name: i}})
        for i in ids
        for path, name in [
            ("/units/1/sessions", "page"),
            ("/units/1/sessions", "per_page"),
            ("/units/1/summary", "marker_id"),
            ("/me/sessions", "unit_id"),
            ("/me/sessions", "page"),
        ]
    ]
    assert server_errors(client, requests) == []
