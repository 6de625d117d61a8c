"""What-if: `?timeout=` on the summary and the timeline cuts sessions afresh from the raw
activities; checked against the independent sessionizer, and against the stored reports
under the configured timeout."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from demo.extensions import db, tutor_times
from tutor_times.reports import whatif
from tutor_times.reports.scope import Scope

from ..conftest import BACKENDS, T0, Clock, build, login, play_scenario
from .test_property import TIMEOUT, reference
from .test_rebuild import history

UNIT = 1
FROM, TO = (T0 - timedelta(days=7)).date(), (T0 - timedelta(days=1)).date()


@pytest.fixture(params=BACKENDS)
def whatif_app(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Flask]:
    yield from build(str(request.param))


def get(app: Flask, report: str, **params: Any) -> Any:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    r = login(app, "convenor").get(f"/tutor-times/units/{UNIT}/{report}?{query}")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def expected_tutors(stream: list[tuple[Any, ...]], timeout: timedelta) -> list[dict[str, Any]]:
    """Per tutor of the unit, from the reference sessions that start in the range: sessions,
    assessments (every activity of these streams is one) and minutes, overlapping sessions
    merged first (R10)."""
    start = datetime.combine(FROM, datetime.min.time(), T0.tzinfo)
    end = datetime.combine(TO + timedelta(days=1), datetime.min.time(), T0.tzinfo)
    mine: dict[int, list[tuple[Any, ...]]] = {}
    for key, first, last, _, count in reference(stream, timeout):
        if key[1] == UNIT and start <= first < end:
            mine.setdefault(key[0], []).append((first, last, count))
    tutors = []
    for marker in sorted(mine):
        spans = sorted(mine[marker])
        minutes, block = 0, list(spans[0][:2])
        for first, last, _ in spans[1:]:
            if first <= block[1]:
                block[1] = max(block[1], last)
            else:
                minutes += max(1, (block[1] - block[0]) // timedelta(minutes=1))
                block = [first, last]
        minutes += max(1, (block[1] - block[0]) // timedelta(minutes=1))
        assessments = sum(c for _, _, c in spans)
        tutors.append(
            {
                "marker_id": marker,
                "sessions": len(spans),
                "assessments": assessments,
                "minutes": minutes,
                "minutes_per_assessment": round(minutes / assessments, 1),
            }
        )
    return tutors


@pytest.mark.parametrize("seconds", [120, 300, 900, 1800, 7200])
def test_what_if_equals_the_reference_under_that_timeout(whatif_app: Flask, seconds: int) -> None:
    rows, stream = history(seed=seconds, n=400)
    with whatif_app.app_context():
        tutor_times.import_activities(rows, source_key="whatif")
    summary = get(whatif_app, "summary", timeout=seconds, **{"from": FROM, "to": TO})
    assert summary["tutors"] == expected_tutors(stream, timedelta(seconds=seconds))
    timeline = get(whatif_app, "timeline", timeout=seconds, **{"from": FROM, "to": TO})
    for field in ("minutes", "sessions", "assessments"):
        assert sum(b[field] for b in timeline["buckets"]) == summary["totals"][field]


@pytest.mark.parametrize(
    "unit_id, by_tutor", [(UNIT, False), (None, False), (None, True), (UNIT, True)]
)
def test_what_if_sessions_of_any_scope_are_the_reference(
    whatif_app: Flask, unit_id: int | None, by_tutor: bool
) -> None:
    """A scope of a unit, of a tutor, of both or of neither: the sessions it cuts are the
    reference's sessions of that scope (on PostgreSQL the key's columns the scope fixes
    are left out of the query, and put back), with their assessments counted among other
    actions, and activities of one key at one instant in one session."""
    seconds = 900
    rows, stream = history(seed=seconds, n=400)
    rows = [{**r, "action": "inbox"} if n % 7 == 3 else r for n, r in enumerate(rows)]
    twins = [
        {**r, "action": "assessing" if n % 2 else "inbox", "import_key": f"twin-{n}"}
        for n, r in enumerate(rows)
        if n % 5 == 0
    ]
    stream += [
        ("act", (t["marker_id"], t["unit_id"], t["ip_address"]), t["created_at"]) for t in twins
    ]
    rows += twins
    with whatif_app.app_context():
        tutor_times.import_activities(rows, source_key="whatif")
    timeout = timedelta(seconds=seconds)
    found = reference(stream, timeout)
    tutor = min(key[0] for key, *_ in found) if by_tutor else None
    start = datetime.combine(FROM, datetime.min.time(), T0.tzinfo)
    end = datetime.combine(TO + timedelta(days=1), datetime.min.time(), T0.tzinfo)

    def assessed(key: tuple[Any, ...], first: datetime, last: datetime) -> int:
        return sum(
            1
            for r in rows
            if (r["marker_id"], r["unit_id"], r["ip_address"]) == key
            and first <= r["created_at"] <= last
            and r["action"] == "assessing"
        )

    expected = sorted(
        (key[0], key[1], key[2], first, last, assessed(key, first, last))
        for key, first, last, _, _ in found
        if start <= first < end and unit_id in (None, key[1]) and tutor in (None, key[0])
    )
    assert expected, "the scope holds sessions"
    activities = {(*key, first): count for key, first, _, _, count in found}
    assert any(s[5] < activities[s[:4]] for s in expected), "some activities do not assess"
    scope = Scope(start, end, unit_id=unit_id, marker_id=tutor)
    with whatif_app.app_context(), db.engine.connect() as conn:
        cut = whatif.sessions(conn, tutor_times.models, scope, timeout)
    assert sorted(tuple(s) for s in cut) == expected


def test_what_if_under_the_configured_timeout_is_the_stored_report(
    whatif_app: Flask, clock: Clock
) -> None:
    play_scenario(whatif_app, clock)
    seconds = int(TIMEOUT.total_seconds())
    for report in ("summary", "timeline"):
        for tz in ("UTC", "Australia/Melbourne"):
            params = {"from": "2026-02-27", "to": "2026-03-04", "tz": tz}
            stored = get(whatif_app, report, **params)
            assert get(whatif_app, report, timeout=seconds, **params) == stored
            assert stored != get(whatif_app, report, timeout=60, **params)


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "abc", "86401", ""])
def test_a_bad_timeout_is_a_400(whatif_app: Flask, value: str) -> None:
    r = login(whatif_app, "convenor").get(f"/tutor-times/units/1/summary?timeout={value}")
    assert r.status_code == 400 and "timeout" in str(r.get_json())


def test_only_the_summary_and_the_timeline_take_a_timeout(whatif_app: Flask) -> None:
    client = login(whatif_app, "convenor")
    assert client.get("/tutor-times/units/1/tasks?timeout=300").status_code == 400
    assert client.get("/tutor-times/units/1/sessions?timeout=300").status_code == 400


@pytest.mark.parametrize("report", ["summary", "timeline"])
def test_a_what_if_at_the_start_of_the_calendar_is_a_400(whatif_app: Flask, report: str) -> None:
    """The range starts less than a day after the first instant a datetime can hold: the
    range's bounds refuse it, and leave the first day they take room for a day's timeout."""
    client = login(whatif_app, "convenor")
    query = "from=0001-01-01&to=0001-01-07&tz=Pacific/Kiritimati&timeout=86400"
    r = client.get(f"/tutor-times/units/1/{report}?{query}")
    assert r.status_code == 400
    assert r.get_json()["error"]["field"] == "from"
    query = "from=0002-01-01&to=0002-01-07&tz=Pacific/Kiritimati&timeout=86400"
    assert client.get(f"/tutor-times/units/1/{report}?{query}").status_code == 200
