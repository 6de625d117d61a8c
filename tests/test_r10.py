"""R10 computed by the database (PostgreSQL merges in SQL) equals R10 computed in Python."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from demo.extensions import db, tutor_times
from tutor_times.accounting import merged_minutes
from tutor_times.reports import Scope, merged_minutes_by

from .conftest import T0, built

pytestmark = pytest.mark.real

# (marker, start offset in microseconds, length in microseconds)
SESSIONS = st.lists(
    st.tuples(
        st.sampled_from([3, 4]),
        st.integers(0, 4 * 3600 * 10**6),
        st.integers(0, 3600 * 10**6),
    ),
    max_size=25,
)


@pytest.fixture(scope="module")
def pg_app() -> Iterator[Flask]:
    with built("postgres") as app:
        yield app


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(SESSIONS)
@example([(3, 0, 20 * 60 * 10**6), (3, 15 * 60 * 10**6, 14 * 60 * 10**6)])  # overlap: 29
@example([(3, 0, 10 * 60 * 10**6), (3, 10 * 60 * 10**6, 10 * 60 * 10**6)])  # touching: 20
@example([(3, 0, 59_999_999), (3, 3600 * 10**6, 0)])  # under a minute each: the minimum
def test_sql_merge_equals_python_merge(pg_app: Flask, sessions: list[tuple[int, int, int]]) -> None:
    ms = tutor_times.MarkingSession
    rows = [
        {
            "marker_id": marker,
            "unit_id": 1,
            "ip_address": f"10.0.{i // 250}.{i % 250}",
            "start_time": T0 + timedelta(microseconds=start),
            "end_time": T0 + timedelta(microseconds=start + length),
            "duration_minutes": 1,
            "created_at": T0,
            "updated_at": T0,
        }
        for i, (marker, start, length) in enumerate(sessions)
    ]
    with pg_app.app_context():
        with db.engine.begin() as conn:
            conn.execute(sa.delete(ms))
            if rows:
                conn.execute(sa.insert(ms), rows)
        scope = Scope(T0 - timedelta(days=1), T0 + timedelta(days=1), unit_id=1)
        with db.engine.connect() as conn:
            assert conn.dialect.name == "postgresql"
            in_sql = merged_minutes_by(conn, tutor_times.models, scope, min_minutes=1)
    expected = {
        (None, marker): merged_minutes(
            [(r["start_time"], r["end_time"]) for r in rows if r["marker_id"] == marker], 1
        )
        for marker in {r["marker_id"] for r in rows}
    }
    assert in_sql == expected
