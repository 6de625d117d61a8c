"""R12: minutes split into during-class and outside-class by the host's timetable, with
golden numbers on both backends, in every report that shows minutes."""

from __future__ import annotations

import csv
import io
from bisect import bisect_right
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from demo import create_app
from demo import timetable as demo_timetable
from demo.extensions import db, tutor_times
from demo.seed import seed
from tutor_times.core.accounting import duration_minutes, to_micros
from tutor_times.core.errors import ConfigurationError
from tutor_times.reports.figured import bucket_index
from tutor_times.reports.merge import merged_blocks, merged_split_by
from tutor_times.reports.scope import Scope
from tutor_times.store.class_times import Timetable, split_rows

from ..conftest import BACKENDS, Clock, build, built, login

P = "/tutor-times"
UTC = timezone.utc
MON = datetime(2026, 3, 9, tzinfo=UTC)
MARCH, APRIL = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)


def at(day: int, hh: int, mm: int, ss: int = 0) -> datetime:
    return MON + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


def every(start: datetime, end: datetime, step: int = 10) -> list[datetime]:
    """Activities from start to end, ``step`` minutes apart (under the timeout: one session)."""
    times = []
    t = start
    while t < end:
        times.append(t)
        t += timedelta(minutes=step)
    return [*times, end]


#: (marker_id or None for the whole unit, start, end)
CLASSES: list[tuple[int | None, datetime, datetime]] = [
    (3, at(0, 10, 0), at(0, 12, 0)),  # C1
    (3, at(0, 14, 0), at(0, 15, 0)),  # C2
    (3, at(0, 15, 30), at(0, 16, 30)),  # C3
    (3, at(0, 18, 0), at(0, 19, 0)),  # C4, overlapped by C5
    (3, at(0, 18, 30), at(0, 19, 30)),  # C5
    (None, at(0, 20, 0), at(0, 21, 0)),  # C6: every tutor of the unit
    (3, at(0, 23, 30), at(1, 0, 30)),  # C7: across midnight
    (4, at(1, 10, 0), at(1, 11, 0)),  # C8
    (4, at(1, 13, 5), at(1, 14, 0)),  # C9
    (5, at(0, 6, 0), at(1, 23, 0)),  # another tutor's class: never tutor 3's or 4's
]

#: (name, marker, ip, activities, minutes, during): hand-computed by R4 and R12
SESSIONS: list[tuple[str, int, str, list[datetime], int, int]] = [
    ("outside", 3, "10.0.0.1", every(at(0, 7, 0), at(0, 7, 20)), 20, 0),
    ("inside", 3, "10.0.0.1", every(at(0, 10, 10), at(0, 10, 40)), 30, 30),
    ("straddles the end", 3, "10.0.0.1", every(at(0, 11, 50), at(0, 12, 20)), 30, 10),
    ("straddles the start", 3, "10.0.0.1", every(at(0, 13, 45), at(0, 14, 15)), 30, 15),
    ("two classes", 3, "10.0.0.1", every(at(0, 14, 50), at(0, 15, 40)), 50, 20),
    # C4 ∪ C5 is 18:00-19:30: 70 minutes inside, not 60 + 40
    ("overlapping classes", 3, "10.0.0.1", every(at(0, 17, 50), at(0, 19, 10)), 80, 70),
    ("whole unit's class", 3, "10.0.0.1", every(at(0, 20, 0), at(0, 20, 20)), 20, 20),
    ("across midnight", 3, "10.0.0.1", every(at(0, 23, 40), at(1, 0, 40)), 60, 50),
    ("whole unit's, tutor 4", 4, "10.0.0.3", every(at(0, 20, 30), at(0, 21, 10)), 40, 30),
    # two IPs at once in C8: 10:10-11:20 is one block of 70 minutes, 50 of them in class
    ("two IPs, first", 4, "10.0.0.3", every(at(1, 10, 10), at(1, 10, 40)), 30, 30),
    ("two IPs, second", 4, "10.0.0.4", every(at(1, 10, 30), at(1, 11, 20)), 50, 30),
    # 630 s, 330 of them in C9: ⌊(2·10·330 + 630) / (2·630)⌋ = 5
    ("seconds", 4, "10.0.0.3", [at(1, 13, 0), at(1, 13, 10, 30)], 10, 5),
    # a single activity in a class: the minimum minute, during
    ("one instant", 4, "10.0.0.3", [at(1, 13, 40)], 1, 1),
]

#: per tutor over Mon-Tue: minutes and during (R10: tutor 4's two IPs count 70, 50 during)
TUTOR_3 = {"minutes": 320, "during": 215}
TUTOR_4 = {"minutes": 40 + 70 + 10 + 1, "during": 30 + 50 + 5 + 1}


@pytest.fixture(params=BACKENDS)
def app(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Flask]:
    yield from build(str(request.param))


def play(app: Flask, clock: Clock, sessions: list[tuple[Any, ...]]) -> None:
    """Record every session's activities at their times, then close what is idle."""
    plan = sorted((t, marker, ip) for _, marker, ip, times, *_ in sessions for t in times)
    with app.app_context():
        for t, marker, ip in plan:
            clock.set(t)
            tutor_times.record_activity("assessing", marker_id=marker, unit_id=1, ip_address=ip)
        clock.set(plan[-1][0] + timedelta(days=1))
        tutor_times.close_expired_sessions()


@pytest.fixture
def loader_calls() -> Iterator[list[tuple[int, datetime, datetime]]]:
    """CLASSES as the host's class_times_loader (unit 1 only), recording each call."""
    calls: list[tuple[int, datetime, datetime]] = []

    def classes(unit_id: int, start: datetime, end: datetime) -> list[Any]:
        calls.append((unit_id, start, end))
        if unit_id != 1:
            return []
        return [c for c in CLASSES if c[1] < end and c[2] > start]

    tutor_times.class_times_loader(classes)
    yield calls
    tutor_times.forget_workload_loaders()


@pytest.fixture
def golden(app: Flask, clock: Clock, loader_calls: list[Any]) -> FlaskClient:
    play(app, clock, SESSIONS)
    return login(app, "convenor")


RANGE = "from=2026-03-09&to=2026-03-10&tz=UTC"


def get(client: FlaskClient, url: str) -> Any:
    r = client.get(url)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json() if r.is_json else r.get_data(as_text=True)


def test_each_session_split_by_its_own_time(golden: FlaskClient) -> None:
    page = get(golden, f"{P}/units/1/sessions?{RANGE}&per_page=100")
    got = sorted(
        (s["start_time"], s["duration_minutes"], s["during_class_minutes"])
        for s in page["sessions"]
    )
    expected = sorted(
        (times[0].isoformat().replace("+00:00", "Z"), minutes, during)
        for _, _, _, times, minutes, during in SESSIONS
    )
    assert got == expected
    for s in page["sessions"]:
        assert s["during_class_minutes"] + s["outside_class_minutes"] == s["duration_minutes"]


def test_summary_splits_merged_blocks(golden: FlaskClient, loader_calls: list[Any]) -> None:
    loader_calls.clear()
    result = get(golden, f"{P}/units/1/summary?{RANGE}")
    # once a request: the range's whole UTC months and a day past them (the split kept of a
    # month is tied to its classes)
    assert loader_calls == [(1, MARCH, APRIL + timedelta(days=1))]
    tutors = {t["marker_id"]: t for t in result["tutors"]}
    for marker, want in ((3, TUTOR_3), (4, TUTOR_4)):
        assert tutors[marker]["minutes"] == want["minutes"]
        assert tutors[marker]["during_class_minutes"] == want["during"]
        assert tutors[marker]["outside_class_minutes"] == want["minutes"] - want["during"]
    totals = result["totals"]
    assert totals["during_class_minutes"] == TUTOR_3["during"] + TUTOR_4["during"]
    assert totals["during_class_minutes"] + totals["outside_class_minutes"] == totals["minutes"]
    assert "students" not in totals  # no student_count_loader


def test_a_dashboard_asks_the_loader_once(golden: FlaskClient, loader_calls: list[Any]) -> None:
    """The page shows the summary, the timeline and the calendar, all split: the host's
    timetable is asked for once, over the range's whole months."""
    loader_calls.clear()
    get(golden, f"{P}/units/1/dashboard?{RANGE}")
    assert loader_calls == [(1, MARCH, APRIL + timedelta(days=1))]


def test_r10_two_ips_in_a_class_count_each_minute_once(golden: FlaskClient) -> None:
    result = get(golden, f"{P}/units/1/summary?from=2026-03-10T10:00&to=2026-03-10T12:00&tz=UTC")
    (tutor,) = result["tutors"]
    assert tutor["marker_id"] == 4
    # per session 30 + 30 would be during; the block 10:10-11:20 has 50 minutes in class
    assert (tutor["minutes"], tutor["during_class_minutes"]) == (70, 50)
    assert tutor["outside_class_minutes"] == 20


def test_timeline_buckets_split_and_add_up_to_the_summary(golden: FlaskClient) -> None:
    buckets = get(golden, f"{P}/units/1/timeline?{RANGE}")["buckets"]
    assert [(b["minutes"], b["during_class_minutes"]) for b in buckets] == [
        # Monday: tutor 3 all (the midnight block starts Monday) and tutor 4's 20:30
        (TUTOR_3["minutes"] + 40, TUTOR_3["during"] + 30),
        (70 + 10 + 1, 50 + 5 + 1),
    ]
    for b in buckets:
        assert b["during_class_minutes"] + b["outside_class_minutes"] == b["minutes"]
    summary = get(golden, f"{P}/units/1/summary?{RANGE}")["totals"]
    assert sum(b["during_class_minutes"] for b in buckets) == summary["during_class_minutes"]


def test_csv_has_the_split(golden: FlaskClient) -> None:
    text = get(golden, f"{P}/units/1/summary?{RANGE}&format=csv").lstrip("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text)))
    total = rows[-1]
    assert total["marker_id"] == "total"
    assert int(total["during_class_minutes"]) == TUTOR_3["during"] + TUTOR_4["during"]
    for r in rows:
        assert int(r["during_class_minutes"]) + int(r["outside_class_minutes"]) == int(r["minutes"])
    text = get(golden, f"{P}/units/1/timeline?{RANGE}&format=csv").lstrip("\ufeff")
    days = list(csv.DictReader(io.StringIO(text)))
    assert [d["during_class_minutes"] for d in days] == [str(TUTOR_3["during"] + 30), "56"]
    text = get(golden, f"{P}/units/1/sessions?{RANGE}&format=csv&per_page=100")
    sessions = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert sorted(int(s["during_class_minutes"]) for s in sessions) == sorted(
        during for *_, during in SESSIONS
    )


ONTRACK = [
    "Start Date",
    "Start Time",
    "End Date",
    "End Time",
    "Timezone",
    "Duration (m)",
    "Duration (h)",
    "Submissions Opened",
    "Comments Added",
    "Assessments Made",
    "During Tutorial",
]


def ontrack_rows(client: FlaskClient, url: str) -> tuple[list[str], list[dict[str, str]]]:
    text = get(client, url).lstrip("\ufeff")
    header = next(csv.reader(io.StringIO(text)))
    return header, list(csv.DictReader(io.StringIO(text)))


def test_ontrack_style_of_the_unit_sessions(golden: FlaskClient) -> None:
    header, rows = ontrack_rows(
        golden, f"{P}/units/1/sessions?{RANGE}&format=csv&style=ontrack&per_page=100"
    )
    assert header == ONTRACK
    midnight = next(r for r in rows if r["Start Time"] == "23:40:00")
    assert midnight == {
        "Start Date": "2026-03-09",
        "Start Time": "23:40:00",
        "End Date": "2026-03-10",
        "End Time": "00:40:00",
        "Timezone": "UTC",
        "Duration (m)": "60",
        "Duration (h)": "1.00",
        "Submissions Opened": "0",
        "Comments Added": "0",
        "Assessments Made": "7",
        "During Tutorial": "50",
    }


def test_ontrack_style_of_my_sessions(app: Flask, clock: Clock, loader_calls: list[Any]) -> None:
    play(app, clock, SESSIONS)
    tutor = login(app, "tutor2")  # user 4
    header, rows = ontrack_rows(
        tutor,
        f"{P}/me/sessions?from=2026-03-09&to=2026-03-11&tz=Australia/Melbourne"
        "&format=csv&style=ontrack",
    )
    assert header == ONTRACK
    assert [
        (r["Start Date"], r["Start Time"], r["Duration (m)"], r["During Tutorial"]) for r in rows
    ] == [
        ("2026-03-11", "00:40:00", "1", "1"),
        ("2026-03-11", "00:00:00", "10", "5"),
        ("2026-03-10", "21:30:00", "50", "30"),
        ("2026-03-10", "21:10:00", "30", "30"),
        ("2026-03-10", "07:30:00", "40", "30"),
    ]
    assert {r["Timezone"] for r in rows} == {"Australia/Melbourne"}
    assert rows[1]["Duration (h)"] == "0.17"


def test_ontrack_style_is_a_csv_style(golden: FlaskClient) -> None:
    r = golden.get(f"{P}/me/sessions?{RANGE}&style=ontrack")
    assert r.status_code == 400
    assert r.get_json()["error"]["field"] == "style"
    r = golden.get(f"{P}/me/sessions?{RANGE}&format=csv&style=excel")
    assert r.status_code == 400
    assert r.get_json()["error"]["field"] == "style"


def test_without_a_loader_the_split_is_absent(app: Flask, clock: Clock) -> None:
    play(app, clock, SESSIONS)
    client = login(app, "convenor")
    summary = get(client, f"{P}/units/1/summary?{RANGE}")
    timeline = get(client, f"{P}/units/1/timeline?{RANGE}")
    page = get(client, f"{P}/units/1/sessions?{RANGE}")
    rows = [*summary["tutors"], summary["totals"], *timeline["buckets"], *page["sessions"]]
    for row in rows:
        assert "during_class_minutes" not in row
        assert "outside_class_minutes" not in row
    assert "students" not in summary["totals"]
    text = get(client, f"{P}/units/1/summary?{RANGE}&format=csv")
    assert "during_class_minutes" not in text
    _, ontrack = ontrack_rows(client, f"{P}/units/1/sessions?{RANGE}&format=csv&style=ontrack")
    assert {r["During Tutorial"] for r in ontrack} == {""}  # unknown, not "no"


def test_dst_change_in_the_zone(app: Flask, clock: Clock, loader_calls: list[Any]) -> None:
    """Melbourne leaves daylight time at 03:00 on 5 April 2026 (clocks go back to 02:00).
    A class from 01:30 AEDT to 02:30 AEST is two real hours, not the one its wall clock
    says; a session of 15:30-16:50 UTC has 60 of its 80 minutes in it, on local 5 April."""
    start, end = datetime(2026, 4, 4, 14, 30, tzinfo=UTC), datetime(2026, 4, 4, 16, 30, tzinfo=UTC)
    CLASSES.append((3, start, end))
    try:
        first = datetime(2026, 4, 4, 15, 30, tzinfo=UTC)
        play(app, clock, [("dst", 3, "10.0.0.1", every(first, first + timedelta(minutes=80)))])
        client = login(app, "convenor")
        query = "from=2026-04-04&to=2026-04-06&tz=Australia/Melbourne"
        buckets = get(client, f"{P}/units/1/timeline?{query}")["buckets"]
        _, rows = ontrack_rows(client, f"{P}/units/1/sessions?{query}&format=csv&style=ontrack")
    finally:
        CLASSES.pop()
    assert [(b["start"], b["minutes"], b["during_class_minutes"]) for b in buckets] == [
        ("2026-04-04", 0, 0),
        ("2026-04-05", 80, 60),
        ("2026-04-06", 0, 0),
    ]
    assert [(r["Start Time"], r["End Time"], r["During Tutorial"]) for r in rows] == [
        ("02:30:00", "02:50:00", "60")  # 02:30 AEDT to 02:50 AEST: 80 minutes
    ]


def test_students_and_minutes_per_student(golden: FlaskClient) -> None:
    counts = {(1, 3): 12, (1, 4): 0, (1, None): 30}
    tutor_times.student_count_loader(lambda unit, marker: counts.get((unit, marker)))
    result = get(golden, f"{P}/units/1/summary?{RANGE}")
    tutors = {t["marker_id"]: t for t in result["tutors"]}
    assert tutors[3]["students"] == 12
    assert tutors[3]["minutes_per_student"] == round(TUTOR_3["minutes"] / 12, 1) == 26.7
    assert tutors[4]["students"] == 0
    assert "minutes_per_student" not in tutors[4]  # no students: no rate
    total = result["totals"]
    assert (total["students"], total["minutes_per_student"]) == (30, 14.7)
    text = get(golden, f"{P}/units/1/summary?{RANGE}&format=csv").lstrip("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["students"], r["minutes_per_student"]) for r in rows] == [
        ("12", "26.7"),
        ("0", ""),
        ("30", "14.7"),
    ]


def test_a_malformed_timetable_is_the_hosts_mistake(golden: FlaskClient) -> None:
    wrong: list[Any] = [(3, "10:00", "12:00")]
    tutor_times.class_times_loader(lambda unit, start, end: wrong)
    with pytest.raises(ConfigurationError, match="datetimes"):
        golden.get(f"{P}/units/1/summary?{RANGE}")
    naive = datetime(2026, 3, 9, 10)
    tutor_times.class_times_loader(lambda unit, start, end: [(3, naive, naive)])
    with pytest.raises(ConfigurationError, match="aware"):
        golden.get(f"{P}/units/1/summary?{RANGE}")


# -- R12's arithmetic, proven against a plain reading of the rule ---------------------------

MINUTE = 60 * 10**6
#: (marker: 3, 4 or None, start, length) in microseconds after MON
CLASS_LISTS = st.lists(
    st.tuples(
        st.sampled_from([3, 4, None]),
        st.integers(0, 6 * 3600 * 10**6),
        st.integers(0, 2 * 3600 * 10**6),
    ),
    max_size=12,
)
#: (marker, start, length) of sessions
SESSION_LISTS = st.lists(
    st.tuples(
        st.sampled_from([3, 4]),
        st.integers(0, 6 * 3600 * 10**6),
        st.integers(0, 3600 * 10**6),
    ),
    min_size=1,
    max_size=20,
)


def micros(n: int) -> datetime:
    return MON + timedelta(microseconds=n)


def session_row(i: int, marker: int, unit: int, start: int, length: int) -> dict[str, Any]:
    """The ``i``-th stored session of a generated list: ``start`` and ``length`` in
    microseconds from Monday (its minutes are not read by the split's comparisons)."""
    return {
        "marker_id": marker,
        "unit_id": unit,
        "ip_address": f"10.0.0.{i}",
        "start_time": micros(start),
        "end_time": micros(start + length),
        "duration_minutes": 1,
        "created_at": MON,
        "updated_at": MON,
    }


def split_in_sql(
    app: Flask,
    rows: list[dict[str, Any]],
    scope: Scope,
    timetable: Timetable,
    starts: list[datetime] | None = None,
) -> Any:
    """``merged_split_by`` over exactly ``rows`` (stored afresh), by ``starts``' buckets if
    given."""
    ms = tutor_times.MarkingSession
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(sa.delete(ms))
            conn.execute(sa.insert(ms), rows)
        with db.engine.connect() as conn:
            index = None if starts is None else bucket_index(conn, starts)
            return merged_split_by(
                conn, tutor_times.models, scope, min_minutes=1, bucket=index, timetable=timetable
            )


def plain_during(
    classes: list[tuple[int | None, int, int]], marker: int, start: int, end: int, minutes: int
) -> int:
    """R12 read literally: the tutor's classes as a set of microseconds, counted one by one
    (over a merged list, so overlapping classes count once)."""
    mine = sorted((a, a + n) for who, a, n in classes if who in (None, marker) and n > 0)
    union: list[list[int]] = []
    for a, b in mine:
        if union and a <= union[-1][1]:
            union[-1][1] = max(union[-1][1], b)
        else:
            union.append([a, b])
    if end == start:
        return minutes if any(a <= start < b for a, b in union) else 0
    inside = sum(max(0, min(end, b) - max(start, a)) for a, b in union)
    return (2 * minutes * inside + (end - start)) // (2 * (end - start))


def as_classes(classes: list[tuple[int | None, int, int]]) -> list[tuple[int | None, int, int]]:
    """As :func:`spans_of` makes them of the host's classes: microseconds since 1970."""
    return [(who, to_micros(micros(a)), to_micros(micros(a + n))) for who, a, n in classes]


@settings(max_examples=200, deadline=None)
@given(CLASS_LISTS, SESSION_LISTS)
def test_python_split_is_the_rule(
    classes: list[tuple[int | None, int, int]], sessions: list[tuple[int, int, int]]
) -> None:
    timetable = Timetable.of_unit(as_classes(classes))
    for marker, start, length in sessions:
        minutes = duration_minutes(micros(start), micros(start + length), 1)
        during = timetable.during(1, marker, micros(start), micros(start + length), minutes)
        assert during == plain_during(classes, marker, start, start + length, minutes)
        assert 0 <= during <= minutes


@settings(max_examples=200, deadline=None)
@given(CLASS_LISTS, SESSION_LISTS)
def test_each_rows_split_is_the_rule(
    classes: list[tuple[int | None, int, int]], sessions: list[tuple[int, int, int]]
) -> None:
    """The split of a page's rows (the calendar's, the sessions page's), worked out in one
    loop, is R12 read literally for each row, by marker in a unit and by unit for a tutor."""
    by_marker = Timetable.of_unit(as_classes(classes))
    by_unit = Timetable.of_marker(3, {1: as_classes(classes), 2: as_classes(classes[::2])})
    for timetable, unit in ((by_marker, 1), (by_unit, 1), (by_unit, 2)):
        rows: list[dict[str, Any]] = []
        for marker, start, length in sessions:
            minutes = duration_minutes(micros(start), micros(start + length), 1)
            who = marker if timetable is by_marker else 3
            rows.append(
                {
                    "unit_id": unit,
                    "marker_id": who,
                    "start_time": micros(start),
                    "last_activity": micros(start + length),
                    "duration_minutes": minutes,
                }
            )
        split_rows(rows, timetable)
        shown = classes if unit == 1 else classes[::2]
        for r, (_, start, length) in zip(rows, sessions, strict=True):
            minutes = r["duration_minutes"]
            during = plain_during(shown, r["marker_id"], start, start + length, minutes)
            assert (r["during_class_minutes"], r["outside_class_minutes"]) == (
                during,
                minutes - during,
            )


@pytest.fixture(scope="module", params=["postgres", "postgres-psycopg2"])
def pg_app(request: pytest.FixtureRequest) -> Iterator[Flask]:
    """PostgreSQL through psycopg 3 (the split over real instants, arrays sent in binary)
    and through psycopg2 (the split over microseconds, arrays sent as text)."""
    with built(request.param) as app:
        yield app


@pytest.mark.real
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(CLASS_LISTS, SESSION_LISTS)
@example([(3, 0, 3600 * 10**6), (None, 1800 * 10**6, 3600 * 10**6)], [(3, 600 * 10**6, 0)])
# a tutor with no class of their own has the unit's
@example([(None, 0, 3600 * 10**6), (None, 7200 * 10**6, 60 * 10**6)], [(4, 1800 * 10**6, 10**10)])
def test_sql_split_equals_python_split(
    pg_app: Flask,
    classes: list[tuple[int | None, int, int]],
    sessions: list[tuple[int, int, int]],
) -> None:
    """PostgreSQL's split of R10 blocks (per bucket) is the Python one, exactly."""
    rows = [
        session_row(i, marker, 1, start, length)
        for i, (marker, start, length) in enumerate(sessions)
    ]
    timetable = Timetable.of_unit(as_classes(classes))
    starts = [MON + timedelta(hours=h) for h in range(0, 8, 2)]
    scope = Scope(MON, MON + timedelta(days=1), unit_id=1)
    in_sql = split_in_sql(pg_app, rows, scope, timetable, starts)
    expected: dict[tuple[int, int], tuple[int, int]] = {}
    for marker in {m for m, _, _ in sessions}:
        spans = [
            (r["start_time"], r["end_time"], bisect_right(starts, r["start_time"]) - 1)
            for r in rows
            if r["marker_id"] == marker
        ]
        for first, last, i in merged_blocks(spans):
            minutes = duration_minutes(first, last, 1)
            during = plain_during(
                classes,
                marker,
                to_micros(first) - to_micros(MON),
                to_micros(last) - to_micros(MON),
                minutes,
            )
            total, so_far = expected.get((i, marker), (0, 0))
            expected[i, marker] = (total + minutes, so_far + during)
    assert in_sql == expected


@pytest.mark.real
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(CLASS_LISTS, CLASS_LISTS, SESSION_LISTS, st.lists(st.sampled_from([1, 2]), min_size=20))
def test_sql_split_by_unit_equals_python_split(
    pg_app: Flask,
    classes_1: list[tuple[int | None, int, int]],
    classes_2: list[tuple[int | None, int, int]],
    sessions: list[tuple[int, int, int]],
    units: list[int],
) -> None:
    """A tutor's own report across units: each block split by its unit's classes of that
    tutor, in PostgreSQL as in Python."""
    rows = [
        session_row(i, 3, unit, start, length)
        for i, ((_, start, length), unit) in enumerate(zip(sessions, units, strict=False))
    ]
    timetable = Timetable.of_marker(3, {1: as_classes(classes_1), 2: as_classes(classes_2)})
    scope = Scope(MON, MON + timedelta(days=1), marker_id=3)
    in_sql = split_in_sql(pg_app, rows, scope, timetable)
    expected = (0, 0)
    for unit in (1, 2):
        spans = [(r["start_time"], r["end_time"], None) for r in rows if r["unit_id"] == unit]
        for first, last, _ in merged_blocks(spans):
            minutes = duration_minutes(first, last, 1)
            during = timetable.during(unit, 3, first, last, minutes)
            expected = (expected[0] + minutes, expected[1] + during)
    assert in_sql == {(None, 3): expected}


def test_openapi_documents_the_split_and_the_style(app: Flask) -> None:
    doc = app.test_client().get(f"{P}/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    for model in ("SessionOut", "TutorTotals", "Totals", "Bucket"):
        for name in ("during_class_minutes", "outside_class_minutes"):
            assert "class_times_loader" in schemas[model]["properties"][name]["description"]
            assert name not in schemas[model].get("required", [])
    for model in ("TutorTotals", "Totals"):
        assert "student_count_loader" in schemas[model]["properties"]["students"]["description"]
        assert "minutes_per_student" in schemas[model]["properties"]
    for path in ("/units/{unit_id}/sessions", "/me/sessions"):
        (style,) = [p for p in doc["paths"][P + path]["get"]["parameters"] if p["name"] == "style"]
        assert style["schema"]["enum"] == ["tutor_times", "ontrack"]


# -- the demo host: a weekly timetable and enrolments, wired as both loaders -------------------


def test_the_demo_timetable_is_real_instants_across_dst(tmp_path: Path) -> None:
    app = create_app(
        "testing",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'tt.sqlite'}",
        DEMO_TIMETABLE=True,
    )
    try:
        with app.app_context():
            db.create_all()
            seed()
            # Melbourne leaves daylight time on Sunday 5 April 2026: LA1-01 (Mondays 10:30 to
            # 12:30, tutor1) is at 23:30 UTC the day before, then at 00:30 UTC
            assert tutor_times.has_class_times
            week = demo_timetable.class_times(
                1, datetime(2026, 3, 30, tzinfo=UTC), datetime(2026, 4, 7, tzinfo=UTC)
            )
            la1 = sorted((s, e) for m, s, e in week if m == 3 and s.weekday() in (6, 0))
            assert [(s.astimezone(UTC), e - s) for s, e in la1] == [
                (datetime(2026, 3, 29, 23, 30, tzinfo=UTC), timedelta(hours=2)),
                (datetime(2026, 4, 6, 0, 30, tzinfo=UTC), timedelta(hours=2)),
            ]
            workshops = [(s, e) for m, s, e in week if m is None]
            # the workshop of every tutor: Thursday 2 April, 09:00 to 10:00 AEDT
            assert [(s.astimezone(UTC), e - s) for s, e in workshops] == [
                (datetime(2026, 4, 1, 22, 0, tzinfo=UTC), timedelta(hours=1))
            ]
            assert tutor_times.students_of(1, 3) == 3
            assert tutor_times.students_of(1, 4) == 1
            assert tutor_times.students_of(1, None) == 4
    finally:
        tutor_times.forget_workload_loaders()
        with app.app_context():
            tutor_times.dispose()
            db.engine.dispose()


@pytest.mark.slow
def test_the_demo_history_has_marking_during_a_tutorial(tmp_path: Path) -> None:
    app = create_app(
        "testing", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'h.sqlite'}", DEMO_TIMETABLE=True
    )
    try:
        with app.app_context():
            db.create_all()
        runner = app.test_cli_runner()
        seeded = runner.invoke(args=["seed-demo", "--history"])
        assert seeded.exit_code == 0, seeded.output
        client = login(app, "convenor")
        month_ago = datetime.now(UTC).date() - timedelta(days=30)
        query = f"from={month_ago}&tz=Australia/Melbourne"
        summary = get(client, f"{P}/units/1/summary?{query}")
        tutors = {t["marker_id"]: t for t in summary["tutors"]}
        assert tutors[3]["during_class_minutes"] > 0
        assert tutors[3]["students"] == 3
        assert summary["totals"]["students"] == 4
        for row in [*summary["tutors"], summary["totals"]]:
            assert row["during_class_minutes"] + row["outside_class_minutes"] == row["minutes"]
        html = get(client, f"{P}/units/1/dashboard?{query}")
        assert "During class" in html and "Min / student" in html
    finally:
        tutor_times.forget_workload_loaders()
        with app.app_context():
            tutor_times.dispose()
            db.engine.dispose()


def test_the_last_days_of_the_calendar_ask_a_host_loader_nothing_it_cannot_convert(
    tmp_path: Path,
) -> None:
    """The classes are asked for a day past the range: at the last days a range may cover
    (a year before the calendar's end) a host that converts the range to its own zone (the
    demo does) is never handed an instant it cannot convert."""
    app = create_app(
        "testing", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'e.sqlite'}", DEMO_TIMETABLE=True
    )
    try:
        with app.app_context():
            db.create_all()
            seed()
        client = login(app, "convenor")
        for report in ("summary", "timeline", "sessions", "dashboard"):
            r = client.get(f"{P}/units/1/{report}?from=9998-12-01&to=9998-12-31")
            assert r.status_code == 200, (report, r.get_data(as_text=True)[:300])
    finally:
        tutor_times.forget_workload_loaders()
        with app.app_context():
            tutor_times.dispose()
            db.engine.dispose()


# -- the class-times page's example: OnTrack's columns on the golden scenario ---------------

PAGE = Path(__file__).resolve().parents[2] / "docs" / "user" / "class-times.md"
#: the timetable the class-times page's example registers
PAGE_CLASSES = [
    (3, datetime(2026, 3, 2, 9, 10, tzinfo=UTC), datetime(2026, 3, 2, 9, 40, tzinfo=UTC)),
    (None, datetime(2026, 3, 3, 0, 0, tzinfo=UTC), datetime(2026, 3, 3, 1, 0, tzinfo=UTC)),
]


def page_example() -> tuple[str, str]:
    """The curl command and the CSV the class-times page (docs/user/class-times.md) shows."""
    section = PAGE.read_text()
    command = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    shown = section.split("```text\n", 1)[1].split("\n```", 1)[0]
    return command, shown


def test_the_class_times_page_shows_an_ontrack_csv(scenario: Flask) -> None:
    command, shown = page_example()
    url = command.split("'")[1].removeprefix("http://127.0.0.1:5000")
    tutor_times.class_times_loader(lambda unit, start, end: PAGE_CLASSES)
    try:
        text = get(login(scenario, "tutor1"), url)
    finally:
        tutor_times.forget_workload_loaders()
    assert text.lstrip("\ufeff").replace("\r\n", "\n").strip() == shown


def test_live_sessions_are_split_so_far(app: Flask, clock: Clock, loader_calls: list[Any]) -> None:
    """A session still open at 10:35, started at 09:50 in C1 (10:00-12:00): 45 minutes so
    far, 35 of them in class."""
    with app.app_context():
        for t in every(at(0, 9, 50), at(0, 10, 35)):
            clock.set(t)
            tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.0.0.1")
    (live,) = get(login(app, "convenor"), f"{P}/units/1/active")["sessions"]
    assert (live["duration_minutes"], live["during_class_minutes"]) == (45, 35)
    assert live["outside_class_minutes"] == 10
