"""R10 computed by the database (PostgreSQL merges in SQL) equals R10 computed in Python,
for the summary and per timeline bucket."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from demo.extensions import db, tutor_times
from tutor_times.core.accounting import duration_minutes, merged_minutes
from tutor_times.reports.figured import bucket_index
from tutor_times.reports.merge import merged_blocks, merged_split_by
from tutor_times.reports.scope import Scope

from ..conftest import T0, built

pytestmark = pytest.mark.real


def minutes_of(split: dict[Any, tuple[int, int]]) -> dict[Any, int]:
    """R10's minutes of each (bucket, marker), without their during-class part."""
    return {key: minutes for key, (minutes, _) in split.items()}


# (marker, start offset in microseconds, length in microseconds)
SESSIONS = st.lists(
    st.tuples(
        st.sampled_from([3, 4]),
        st.integers(0, 4 * 3600 * 10**6),
        st.integers(0, 3600 * 10**6),
    ),
    max_size=25,
)


# half-hour buckets over the sessions' four hours, so blocks often cross a bucket's edge
BUCKET_STARTS = [T0 + timedelta(minutes=30 * i) for i in range(-1, 12)]


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
    rows: list[dict[str, Any]] = [
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
            in_sql = minutes_of(merged_split_by(conn, tutor_times.models, scope, min_minutes=1))
            by_bucket = minutes_of(
                merged_split_by(
                    conn,
                    tutor_times.models,
                    scope,
                    min_minutes=1,
                    bucket=bucket_index(conn, BUCKET_STARTS),
                )
            )
    expected = {
        (None, marker): merged_minutes(
            [(r["start_time"], r["end_time"]) for r in rows if r["marker_id"] == marker], 1
        )
        for marker in {r["marker_id"] for r in rows}
    }
    assert in_sql == expected
    # per bucket: each merged block wholly in the bucket of its first session's start
    expected_by_bucket: dict[tuple[int, int], int] = {}
    for marker in {r["marker_id"] for r in rows}:
        spans = [
            (r["start_time"], r["end_time"], bisect_right(BUCKET_STARTS, r["start_time"]) - 1)
            for r in rows
            if r["marker_id"] == marker
        ]
        for first, last, i in merged_blocks(spans):
            key = (i, marker)
            expected_by_bucket[key] = expected_by_bucket.get(key, 0) + duration_minutes(
                first, last, 1
            )
    assert by_bucket == expected_by_bucket
    assert sum(by_bucket.values()) == sum(in_sql.values())
