"""What the database itself guarantees, and what the tracker answers when it refuses."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import IntegrityError

from demo.extensions import db, tutor_times
from tutor_times import InvalidActivityError
from tutor_times.core.errors import UnknownReferenceError

from ..conftest import T0, Clock, activities, sessions


def test_a_closed_session_without_a_duration_is_refused_by_the_database(ctx: Flask) -> None:
    """R4 in the schema: the CHECK must not pass on NULL (a comparison with NULL is NULL)."""
    table = tutor_times.MarkingSession.__table__
    row = {
        "marker_id": 3,
        "unit_id": 1,
        "ip_address": "10.0.0.1",
        "start_time": T0,
        "created_at": T0,
        "updated_at": T0,
    }
    bad: list[dict[str, Any]] = [
        {"end_time": T0 + timedelta(minutes=5), "duration_minutes": None},
        {"end_time": T0 + timedelta(minutes=5), "duration_minutes": 0},
        {"end_time": T0 - timedelta(minutes=5), "duration_minutes": 5},
        {"end_time": None, "duration_minutes": 5},  # an open session has no duration yet
    ]
    for values in bad:
        with pytest.raises(IntegrityError):
            with db.engine.begin() as conn:
                conn.execute(sa.insert(table).values(**row, **values))
    with db.engine.begin() as conn:  # the good ones still go in
        conn.execute(sa.insert(table).values(**row, end_time=None, duration_minutes=None))
        conn.execute(
            sa.insert(table).values(
                **{**row, "ip_address": "10.0.0.2"}, end_time=T0, duration_minutes=1
            )
        )
    assert len(sessions(ctx)) == 2


@pytest.mark.parametrize(("field", "ids"), [("unit_id", (3, 999)), ("marker_id", (999, 1))])
def test_an_unknown_user_or_unit_is_a_clear_error_not_a_retry(
    ctx: Flask, clock: Clock, field: str, ids: tuple[int, int]
) -> None:
    """A foreign-key violation is not a race another request won: no retries, no new ids
    burnt, and the error names the field."""
    marker, unit = ids
    with pytest.raises(UnknownReferenceError) as info:
        tutor_times.record_activity("inbox", marker_id=marker, unit_id=unit, ip_address="10.0.0.1")
    assert isinstance(info.value, InvalidActivityError)
    assert info.value.field == field
    assert sessions(ctx) == [] and activities(ctx) == []
    # one attempt only: the next session gets the next id, not one five further on
    first = tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.0.0.1")
    with db.engine.connect() as conn:
        highest = conn.scalar(sa.select(sa.func.max(tutor_times.MarkingSession.id)))
    assert first.marking_session_id == highest


@pytest.mark.parametrize(
    "ip",
    [
        "fe80::1%eth0",
        "fe80::1%" + "x" * 200,
        "::ffff:1.2.3.4%1",
        "1.2.3.4 ",
        "",
    ],
)
def test_addresses_with_a_scope_or_any_text_are_refused(ctx: Flask, ip: str) -> None:
    with pytest.raises(InvalidActivityError) as info:
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address=ip)
    assert info.value.field == "ip_address"
    assert len(str(info.value)) < 300  # a long address is not echoed whole
    assert sessions(ctx) == []


def test_the_longest_address_fits_its_column(ctx: Flask) -> None:
    ip = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"  # 45 characters, the IPv6 maximum
    a = tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address=ip)
    [s] = sessions(ctx)
    assert (
        s.id == a.marking_session_id and s.ip_address == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    )


@pytest.mark.parametrize(
    "at",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
    ],
)
def test_times_outside_the_calendar_are_bad_input(ctx: Flask, at: str) -> None:
    from datetime import datetime

    with pytest.raises(InvalidActivityError) as info:
        tutor_times.record_activity(
            "inbox", marker_id=3, unit_id=1, ip_address="10.0.0.1", at=datetime.fromisoformat(at)
        )
    assert info.value.field == "at"
