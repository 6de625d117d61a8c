"""What a report may cost and what range it may be asked for: every endpoint takes ranges
within the same bounds (a year inside either end of the calendar, so no arithmetic around a
range can leave it); a what-if that would cut more sessions than its bound is a 413; a
report that runs past TUTOR_TIMES_REPORT_TIMEOUT is a 503 that says so."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from .conftest import Clock, built, login

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
    return r.status_code, r.mimetype, r.get_data(as_text=True)


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
