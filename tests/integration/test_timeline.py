"""How minutes are attributed to buckets: a tutor's overlapping sessions are merged over the
whole range, each merged block counts in the bucket it starts in, and the buckets always add
up to the summary, in any zone, on either backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from demo.extensions import db, tutor_times

from ..conftest import BACKENDS, Clock, built, login

P = "/tutor-times"
UTC = timezone.utc


def record(
    app: Flask, clock: Clock, plan: list[tuple[datetime, str, str]], marker: int = 3
) -> None:
    """Record (time, ip, action) activities of one tutor in unit 1, then close what is idle."""
    with app.app_context():
        for t, ip, action in sorted(plan):
            clock.set(t)
            tutor_times.record_activity(action, marker_id=marker, unit_id=1, ip_address=ip)
        clock.set(max(t for t, _, _ in plan) + timedelta(hours=2))
        tutor_times.close_expired_sessions()


def reports(
    client: FlaskClient, query: str, bucket: str = "day"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary's totals and the timeline's buckets of the same range."""
    summary = client.get(f"{P}/units/1/summary?{query}")
    timeline = client.get(f"{P}/units/1/timeline?{query}&bucket={bucket}")
    assert summary.status_code == timeline.status_code == 200, timeline.get_data(as_text=True)
    return summary.get_json()["totals"], timeline.get_json()["buckets"]


def assert_buckets_add_up(totals: dict[str, Any], buckets: list[dict[str, Any]]) -> None:
    for key in ("minutes", "sessions", "assessments"):
        assert sum(b[key] for b in buckets) == totals[key], key


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_two_ips_overlapping_across_midnight_count_once_on_the_day_they_start(
    app: Flask, clock: Clock
) -> None:
    # 10.0.0.1: 23:40-00:10 (30 minutes); 10.0.0.2: 00:05-00:25 (20 minutes). Merged they are
    # one block, 23:40-00:25: 45 minutes, all on the day the block starts.
    record(
        app,
        clock,
        [
            (utc(2026, 3, 2, 23, 40), "10.0.0.1", "assessing"),
            (utc(2026, 3, 2, 23, 50), "10.0.0.1", "inbox"),
            (utc(2026, 3, 3, 0, 0), "10.0.0.1", "inbox"),
            (utc(2026, 3, 3, 0, 10), "10.0.0.1", "assessing"),
            (utc(2026, 3, 3, 0, 5), "10.0.0.2", "assessing"),
            (utc(2026, 3, 3, 0, 15), "10.0.0.2", "inbox"),
            (utc(2026, 3, 3, 0, 25), "10.0.0.2", "inbox"),
        ],
    )
    totals, buckets = reports(login(app, "convenor"), "from=2026-03-02&to=2026-03-03")
    assert (totals["minutes"], totals["sessions"], totals["assessments"]) == (45, 2, 3)
    # sessions and assessments stay with the session that holds them
    assert [(b["start"], b["minutes"], b["sessions"], b["assessments"]) for b in buckets] == [
        ("2026-03-02", 45, 1, 2),
        ("2026-03-03", 0, 1, 1),
    ]
    assert_buckets_add_up(totals, buckets)


def test_berlin_spring_forward(app: Flask, clock: Clock) -> None:
    # 2026-03-29 in Berlin has 23 hours (02:00 CET -> 03:00 CEST).
    # 10.0.0.1 22:50-23:20 UTC (23:50-00:20 local) and 10.0.0.2 23:10-23:40 UTC (00:10-00:40
    # local, the next day) merge into 50 minutes on 2026-03-28. A session over the missing
    # hour, 00:50-01:10 UTC (01:50 CET-03:10 CEST), is 20 minutes on 2026-03-29.
    record(
        app,
        clock,
        [
            (utc(2026, 3, 28, 22, 50), "10.0.0.1", "assessing"),
            (utc(2026, 3, 28, 23, 0), "10.0.0.1", "inbox"),
            (utc(2026, 3, 28, 23, 10), "10.0.0.1", "inbox"),
            (utc(2026, 3, 28, 23, 20), "10.0.0.1", "inbox"),
            (utc(2026, 3, 28, 23, 10), "10.0.0.2", "assessing"),
            (utc(2026, 3, 28, 23, 20), "10.0.0.2", "inbox"),
            (utc(2026, 3, 28, 23, 30), "10.0.0.2", "inbox"),
            (utc(2026, 3, 28, 23, 40), "10.0.0.2", "assessing"),
            (utc(2026, 3, 29, 0, 50), "10.0.0.1", "inbox"),
            (utc(2026, 3, 29, 1, 0), "10.0.0.1", "inbox"),
            (utc(2026, 3, 29, 1, 10), "10.0.0.1", "assessing"),
        ],
    )
    totals, buckets = reports(
        login(app, "convenor"), "from=2026-03-28&to=2026-03-30&tz=Europe/Berlin"
    )
    assert [
        (b["start"], b["start_time"], b["minutes"], b["sessions"], b["assessments"])
        for b in buckets
    ] == [
        ("2026-03-28", "2026-03-27T23:00:00Z", 50, 1, 1),
        ("2026-03-29", "2026-03-28T23:00:00Z", 20, 2, 3),
        ("2026-03-30", "2026-03-29T22:00:00Z", 0, 0, 0),
    ]
    assert (totals["minutes"], totals["sessions"], totals["assessments"]) == (70, 3, 4)


def test_melbourne_weeks_across_the_end_of_daylight_saving(app: Flask, clock: Clock) -> None:
    # Daylight saving ends in Melbourne on Sunday 2026-04-05 (03:00 AEDT -> 02:00 AEST), so
    # the week from Monday 2026-04-06 starts at 14:00 UTC, not 13:00. Two IPs overlap across
    # that Monday midnight: 13:50-14:20 and 14:00-14:30 UTC merge into 40 minutes in the week
    # of 2026-03-30; the second session (and its assessment) still counts in the next week.
    # 15:30 UTC on 04-04 is 02:30 AEDT on 04-05, the first of the repeated hour: 12 minutes.
    record(
        app,
        clock,
        [
            (utc(2026, 4, 4, 15, 30), "10.0.0.1", "inbox"),
            (utc(2026, 4, 4, 15, 42), "10.0.0.1", "inbox"),
            (utc(2026, 4, 5, 13, 50), "10.0.0.1", "inbox"),
            (utc(2026, 4, 5, 14, 0), "10.0.0.1", "inbox"),
            (utc(2026, 4, 5, 14, 10), "10.0.0.1", "inbox"),
            (utc(2026, 4, 5, 14, 20), "10.0.0.1", "assessing"),
            (utc(2026, 4, 5, 14, 0), "10.0.0.2", "assessing"),
            (utc(2026, 4, 5, 14, 10), "10.0.0.2", "inbox"),
            (utc(2026, 4, 5, 14, 20), "10.0.0.2", "inbox"),
            (utc(2026, 4, 5, 14, 30), "10.0.0.2", "inbox"),
        ],
    )
    totals, buckets = reports(
        login(app, "convenor"),
        "from=2026-03-30&to=2026-04-12&tz=Australia/Melbourne",
        bucket="week",
    )
    assert [
        (b["start"], b["start_time"], b["minutes"], b["sessions"], b["assessments"])
        for b in buckets
    ] == [
        ("2026-03-30", "2026-03-29T13:00:00Z", 52, 2, 1),
        ("2026-04-06", "2026-04-05T14:00:00Z", 0, 1, 1),
    ]
    assert (totals["minutes"], totals["sessions"], totals["assessments"]) == (52, 3, 2)


def test_a_session_belongs_to_the_range_it_starts_in(app: Flask, clock: Clock) -> None:
    # The overlapping sessions start on different days: each day alone has its own session
    # whole; the two days together merge them into one 45-minute block.
    record(
        app,
        clock,
        [
            (utc(2026, 3, 2, 23, 40), "10.0.0.1", "inbox"),
            (utc(2026, 3, 2, 23, 50), "10.0.0.1", "inbox"),
            (utc(2026, 3, 3, 0, 0), "10.0.0.1", "inbox"),
            (utc(2026, 3, 3, 0, 10), "10.0.0.1", "inbox"),
            (utc(2026, 3, 3, 0, 5), "10.0.0.2", "inbox"),
            (utc(2026, 3, 3, 0, 15), "10.0.0.2", "inbox"),
            (utc(2026, 3, 3, 0, 25), "10.0.0.2", "inbox"),
        ],
    )
    client = login(app, "convenor")
    for query, minutes, n_sessions in [
        ("from=2026-03-02&to=2026-03-02", 30, 1),
        ("from=2026-03-03&to=2026-03-03", 20, 1),
        ("from=2026-03-02&to=2026-03-03", 45, 2),
        ("from=2026-03-02T23:45Z&to=2026-03-03T23:00Z", 20, 1),
    ]:
        totals, buckets = reports(client, query)
        assert (totals["minutes"], totals["sessions"]) == (minutes, n_sessions), query
        assert_buckets_add_up(totals, buckets)


# -- any sessions, any zone: the buckets add up to the summary -----------------------------

ZONES = [
    "UTC",
    "Australia/Adelaide",
    "Asia/Kathmandu",
    "Australia/Melbourne",
    "Australia/Lord_Howe",  # a 30-minute daylight-saving shift
    "Europe/Berlin",
    "America/St_Johns",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "America/Santiago",  # clocks go back at midnight: a local date repeats
]
BASE = utc(2026, 4, 1)
HOUR = 3600
# (marker, ip, start offset in seconds from BASE, length in seconds, assessments)
SESSIONS = st.lists(
    st.tuples(
        st.sampled_from([3, 4]),
        st.sampled_from(["10.0.0.1", "10.0.0.2"]),
        st.integers(0, 9 * 24 * HOUR),
        st.integers(0, 5 * HOUR),
        st.integers(0, 2),
    ),
    max_size=20,
)


@pytest.fixture(scope="module", params=BACKENDS)
def shared_app(request: pytest.FixtureRequest) -> Iterator[tuple[Flask, FlaskClient]]:
    with built(str(request.param)) as app:
        yield app, login(app, "convenor")


def store_sessions(app: Flask, rows: list[tuple[int, str, int, int, int]]) -> None:
    """Write closed sessions and their assessments straight into the tables."""
    ms, act = tutor_times.MarkingSession, tutor_times.SessionActivity
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.delete(act))
        conn.execute(sa.delete(ms))
        for marker, ip, offset, length, n in rows:
            start = BASE + timedelta(seconds=offset)
            end = start + timedelta(seconds=length)
            sid = conn.execute(
                sa.insert(ms)
                .values(
                    marker_id=marker,
                    unit_id=1,
                    ip_address=ip,
                    start_time=start,
                    end_time=end,
                    duration_minutes=max(1, length // 60),
                    created_at=start,
                    updated_at=end,
                )
                .returning(ms.id)
            ).scalar_one()
            times = [start] + [end] * n if n else [start, end]
            actions = ["inbox"] + ["assessing"] * n if n else ["inbox", "inbox"]
            conn.execute(
                sa.insert(act),
                [
                    {
                        "marking_session_id": sid,
                        "action": a,
                        "created_at": t,
                        "updated_at": t,
                    }
                    for a, t in zip(actions, times, strict=True)
                ],
            )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    SESSIONS,
    st.sampled_from(ZONES),
    st.sampled_from(["day", "week"]),
    st.integers(-2, 6),
    st.integers(0, 9),
)
@example(
    [(3, "10.0.0.1", 23 * HOUR + 40 * 60, 30 * 60, 1), (3, "10.0.0.2", 24 * HOUR, 30 * 60, 1)],
    "UTC",
    "day",
    0,
    3,
)
def test_the_buckets_always_add_up_to_the_summary(
    shared_app: tuple[Flask, FlaskClient],
    rows: list[tuple[int, str, int, int, int]],
    tz: str,
    bucket: str,
    first_day: int,
    days: int,
) -> None:
    app, client = shared_app
    store_sessions(app, rows)
    start = date(2026, 4, 1) + timedelta(days=first_day)
    query = f"from={start}&to={start + timedelta(days=days)}&tz={tz}"
    totals, buckets = reports(client, query, bucket)
    assert_buckets_add_up(totals, buckets)
    # and every tutor's buckets add up to their own summary row
    for marker in (3, 4):
        mine, my_buckets = reports(client, f"{query}&marker_id={marker}", bucket)
        assert_buckets_add_up(mine, my_buckets)
