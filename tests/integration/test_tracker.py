"""R1-R5 and R8 through record_activity, on every backend and store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import IntegrityError

from demo.extensions import db, tutor_times
from tutor_times import InvalidActivityError, UnknownActionError

from ..conftest import EVERY_DRIVER, T0, Clock, activities, sessions


@pytest.fixture(params=EVERY_DRIVER)
def backend(request: pytest.FixtureRequest) -> str:
    """The rules hold on every supported driver: psycopg 3, psycopg2 and SQLite."""
    return str(request.param)


TUTOR, OTHER_TUTOR, UNIT, OTHER_UNIT = 3, 4, 1, 2
IP, OTHER_IP = "10.0.0.1", "10.0.0.2"
TIMEOUT = timedelta(seconds=900)
BACKDATE = timedelta(seconds=60)  # TUTOR_TIMES_MAX_BACKDATE's default


def record(at: datetime, marker: int = TUTOR, unit: int = UNIT, ip: str = IP, **kw: object):  # type: ignore[no-untyped-def]
    """Record at ``at``, letting the clock catch up as real time would."""
    clock = tutor_times.clock
    if isinstance(at, datetime) and at.tzinfo is not None and clock() < at:
        clock.set(at)  # type: ignore[attr-defined]
    return tutor_times.record_activity(
        str(kw.pop("action", "assessing")),
        marker_id=marker,
        unit_id=unit,
        ip_address=ip,
        at=at,
        **kw,  # type: ignore[arg-type]
    )


def test_activities_within_the_timeout_share_a_session(ctx: Flask) -> None:
    a = record(T0)
    b = record(T0 + timedelta(minutes=5))
    c = record(T0 + timedelta(minutes=19))
    assert a.marking_session_id == b.marking_session_id == c.marking_session_id
    [s] = sessions(ctx)
    assert s.start_time == T0 and s.end_time is None


def test_a_gap_of_exactly_timeout_starts_a_new_session(ctx: Flask) -> None:
    a = record(T0)
    b = record(T0 + TIMEOUT)
    assert a.marking_session_id != b.marking_session_id
    first, second = sessions(ctx)
    # R3: the first ends at its last activity, not when the gap was noticed.
    assert first.end_time == T0 and first.duration_minutes == 1
    assert second.start_time == T0 + TIMEOUT and second.end_time is None


def test_a_gap_just_under_timeout_continues(ctx: Flask) -> None:
    a = record(T0)
    b = record(T0 + TIMEOUT - timedelta(seconds=1))
    c = record(T0 + 2 * TIMEOUT - timedelta(seconds=2))
    assert a.marking_session_id == b.marking_session_id == c.marking_session_id
    # one microsecond under the timeout still continues
    d = record(T0 + 3 * TIMEOUT - timedelta(seconds=2, microseconds=1))
    assert d.marking_session_id == a.marking_session_id


def test_each_key_has_its_own_session(ctx: Flask) -> None:
    ids = {
        record(T0).marking_session_id,
        record(T0, marker=OTHER_TUTOR).marking_session_id,
        record(T0, unit=OTHER_UNIT).marking_session_id,
        record(T0, ip=OTHER_IP).marking_session_id,
    }
    assert len(ids) == 4
    assert record(T0 + timedelta(minutes=1), ip=OTHER_IP).marking_session_id in ids


def test_out_of_order_activity_joins_and_never_moves_the_end_backwards(
    ctx: Flask, clock: Clock
) -> None:
    clock.set(T0 + timedelta(minutes=10))
    a = record(T0 + timedelta(minutes=10))
    clock.set(T0 + timedelta(minutes=10, seconds=30))
    b = record(T0 + timedelta(minutes=9, seconds=45))  # arrives late, before the start
    c = record(T0 + timedelta(minutes=24))  # 14 min after the last activity, not after b
    assert a.marking_session_id == b.marking_session_id == c.marking_session_id
    clock.set(T0 + timedelta(hours=2))
    assert tutor_times.close_expired_sessions() == 1
    [s] = sessions(ctx)
    # R2: the late activity moved the start back; the end is the latest activity
    assert s.start_time == T0 + timedelta(minutes=9, seconds=45)
    assert s.end_time == T0 + timedelta(minutes=24)
    assert s.duration_minutes == 14


def test_a_late_activity_bridges_the_session_its_successor_closed(ctx: Flask, clock: Clock) -> None:
    """The activity at 15:30 closed the first session (idle 15:30 > TIMEOUT); one from 14:59
    arriving late lies within the timeout of both, so the two are one session (R2)."""
    first = record(T0)
    second = record(T0 + timedelta(minutes=15, seconds=30))
    assert [s.end_time for s in sessions(ctx)] == [T0, None]
    late = record(T0 + timedelta(minutes=14, seconds=59))  # 31 s late
    assert late.marking_session_id == first.marking_session_id
    [s] = sessions(ctx)
    assert (s.id, s.start_time, s.end_time) == (first.marking_session_id, T0, None)
    assert {a.marking_session_id for a in activities(ctx)} == {first.marking_session_id}
    assert second.marking_session_id != first.marking_session_id
    # the merged session goes on: the hot path finds it, whatever Redis had cached
    nxt = record(T0 + timedelta(minutes=20))
    assert nxt.marking_session_id == first.marking_session_id
    assert tutor_times.close_expired_sessions(T0 + timedelta(hours=1)) == 1
    [s] = sessions(ctx)
    assert (s.start_time, s.end_time, s.duration_minutes) == (
        T0,
        T0 + timedelta(minutes=20),
        20,
    )


@pytest.mark.parametrize(
    ("late", "message"),
    [
        (timedelta(seconds=60, microseconds=1), "in the past"),
        (timedelta(days=-1), "in the future"),
    ],
)
def test_live_activities_lie_within_the_backdating_window(
    ctx: Flask, clock: Clock, late: timedelta, message: str
) -> None:
    """R2: `at` within [now - MAX_BACKDATE, now + MAX_CLOCK_SKEW]; older is history."""
    clock.set(T0)
    with pytest.raises(InvalidActivityError, match=message) as info:
        tutor_times.record_activity(
            "inbox", marker_id=TUTOR, unit_id=UNIT, ip_address=IP, at=T0 - late
        )
    assert info.value.field == "at"
    assert sessions(ctx) == [] and activities(ctx) == []
    # the edge of the window is inside it
    tutor_times.record_activity(
        "inbox", marker_id=TUTOR, unit_id=UNIT, ip_address=IP, at=T0 - timedelta(seconds=60)
    )


def test_close_uses_the_last_activity_and_floors_minutes(ctx: Flask) -> None:
    record(T0)
    record(T0 + timedelta(minutes=12, seconds=59, microseconds=999999))
    last = T0 + timedelta(minutes=12, seconds=59, microseconds=999999)
    # R6: the sweep waits TIMEOUT and the backdating window, so a late activity still fits
    idle = TIMEOUT + BACKDATE
    assert tutor_times.close_expired_sessions(last + idle - timedelta(microseconds=1)) == 0
    assert tutor_times.close_expired_sessions(last + idle) == 1
    [s] = sessions(ctx)
    assert s.end_time == last
    assert s.duration_minutes == 12


def test_a_single_activity_session_lasts_the_minimum(ctx: Flask) -> None:
    record(T0)
    assert tutor_times.close_expired_sessions(T0 + timedelta(days=1)) == 1
    [s] = sessions(ctx)
    assert (s.end_time, s.duration_minutes) == (T0, 1)


def test_closing_is_idempotent(ctx: Flask) -> None:
    record(T0)
    assert tutor_times.close_expired_sessions(T0 + timedelta(hours=1)) == 1
    before = sessions(ctx)[0]
    assert tutor_times.close_expired_sessions(T0 + timedelta(hours=3)) == 0
    after = sessions(ctx)[0]
    assert (after.end_time, after.duration_minutes, after.updated_at) == (
        before.end_time,
        before.duration_minutes,
        before.updated_at,
    )


def test_a_late_activity_finds_its_session_still_open(ctx: Flask, clock: Clock) -> None:
    """R6: a sweep an instant before the grace ends closes nothing; the activity that arrives
    a whole backdating window late then joins its session, and the next sweep closes it."""
    a = record(T0)
    now = T0 + TIMEOUT + BACKDATE - timedelta(microseconds=1)
    clock.set(now)
    assert tutor_times.close_expired_sessions() == 0
    b = record(now - BACKDATE)
    assert b.marking_session_id == a.marking_session_id
    clock.set(now + TIMEOUT + BACKDATE)
    assert tutor_times.close_expired_sessions() == 1
    [s] = sessions(ctx)
    assert (s.start_time, s.end_time) == (T0, now - BACKDATE)


def test_activity_after_a_sweep_starts_a_new_session(ctx: Flask, clock: Clock) -> None:
    a = record(T0)
    clock.set(T0 + TIMEOUT + BACKDATE)
    assert tutor_times.close_expired_sessions() == 1
    b = record(T0 + TIMEOUT + BACKDATE)
    assert b.marking_session_id != a.marking_session_id
    first, second = sessions(ctx)
    assert first.end_time == T0 and second.end_time is None


def test_the_returned_activity_is_the_stored_row(ctx: Flask) -> None:
    a = record(T0, project_id=1, task_id=2, task_definition_id=2, action="add-comment")
    [stored] = activities(ctx)
    assert (a.id, a.marking_session_id, a.action, a.project_id, a.task_id) == (
        stored.id,
        stored.marking_session_id,
        "add-comment",
        1,
        2,
    )
    assert stored.created_at == T0 and stored.task_definition_id == 2
    merged = db.session.merge(a, load=False)
    assert merged.marking_session.marker_id == TUTOR


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({}, id="a second open session of the key (R5)"),
        pytest.param({"end_time": T0, "duration_minutes": 0}, id="closed with no minutes (R4)"),
        pytest.param(
            {"end_time": T0 - timedelta(minutes=5), "duration_minutes": 1},
            id="ending before it starts",
        ),
    ],
)
def test_the_database_itself_refuses(ctx: Flask, row: dict[str, object]) -> None:
    """The rules hold even for code that bypasses the tracker."""
    record(T0)
    ms = tutor_times.MarkingSession
    key = {"marker_id": TUTOR, "unit_id": UNIT, "ip_address": IP}
    with pytest.raises(IntegrityError):
        db.session.execute(
            sa.insert(ms).values(**key, start_time=T0, created_at=T0, updated_at=T0, **row)
        )
        db.session.commit()
    db.session.rollback()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"action": "delete-everything"}, "action"),
        ({"action": ""}, "action"),
        ({"marker": -1}, "marker_id"),
        ({"marker": 0}, "marker_id"),
        ({"marker": "3"}, "marker_id"),
        ({"marker": True}, "marker_id"),
        ({"unit": 1.5}, "unit_id"),
        ({"unit": None}, "unit_id"),
        ({"ip": "not-an-ip"}, "ip_address"),
        ({"ip": "300.1.1.1"}, "ip_address"),
        ({"ip": None}, "ip_address"),
        ({"ip": 167772161}, "ip_address"),  # an int is not an address, even if ipaddress takes it
        ({"task_id": -5}, "task_id"),
        ({"project_id": "x"}, "project_id"),
        ({"task_definition_id": 2**63}, "task_definition_id"),
        ({"at": datetime(2026, 3, 2, 9, 0)}, "at"),  # naive
        ({"at": "2026-03-02T09:00:00Z"}, "at"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    ctx: Flask, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {"at": T0, **kwargs}
    with pytest.raises(InvalidActivityError) as info:
        record(**args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value) or "action" in str(info.value)
    assert sessions(ctx) == [] and activities(ctx) == []


def test_an_activity_in_the_future_is_refused(ctx: Flask, clock: Clock) -> None:
    with pytest.raises(InvalidActivityError, match="future") as info:
        tutor_times.record_activity(
            "assessing",
            marker_id=TUTOR,
            unit_id=UNIT,
            ip_address=IP,
            at=clock() + timedelta(hours=1),
        )
    assert info.value.field == "at"
    assert activities(ctx) == []


def test_unknown_action_names_the_allowed_ones(ctx: Flask) -> None:
    with pytest.raises(UnknownActionError, match="assessing"):
        record(T0, action="grade")


def test_a_small_clock_skew_is_accepted(ctx: Flask, clock: Clock) -> None:
    a = tutor_times.record_activity(
        "assessing",
        marker_id=TUTOR,
        unit_id=UNIT,
        ip_address=IP,
        at=clock() + timedelta(seconds=30),
    )
    assert a.created_at == T0 + timedelta(seconds=30)


def test_times_are_stored_in_utc(ctx: Flask) -> None:
    melbourne = timezone(timedelta(hours=11))
    a = record(datetime(2026, 3, 2, 20, 0, tzinfo=melbourne))
    [stored] = activities(ctx)
    assert stored.created_at == T0 and stored.created_at.utcoffset() == timedelta(0)
    assert a.created_at == T0
