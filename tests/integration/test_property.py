"""Random activity streams against a tiny independent sessionizer written from R2-R4."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import selectinload

from demo.extensions import tutor_times

from ..conftest import BACKENDS, T0, Clock, build, reset_tables, stored

TIMEOUT = timedelta(seconds=900)
BACKDATE = timedelta(seconds=60)  # TUTOR_TIMES_MAX_BACKDATE's default
US = timedelta(microseconds=1)
KEYS = [(3, 1, "10.0.0.1"), (3, 1, "10.0.0.2"), (4, 1, "10.0.0.1"), (3, 2, "10.0.0.1")]


def reference(stream: list[tuple[Any, ...]], timeout: timedelta) -> list[tuple[Any, ...]]:
    """R2 over each key's activities sorted by time: a session is a maximal run in which every
    gap between consecutive activities is under the timeout, whatever order they arrived in.
    R3/R4: a closed session ends at its last activity; minutes floored, at least one.
    (Every session is closed at the end of a stream, so sweeps do not change the answer.)"""
    times: dict[tuple[int, int, str], list[datetime]] = {}
    for event in stream:
        if event[0] == "act":
            times.setdefault(event[1], []).append(event[2])
    sessions: list[tuple[Any, ...]] = []
    for key, ts in times.items():
        ts.sort()
        runs: list[list[datetime]] = [[ts[0]]]
        for t in ts[1:]:
            if t - runs[-1][-1] < timeout:
                runs[-1].append(t)
            else:
                runs.append([t])
        for run in runs:
            start, last = run[0], run[-1]
            minutes = max(1, (last - start) // timedelta(minutes=1))
            sessions.append((key, start, last, minutes, len(run)))
    return sorted(sessions)


# Gaps cluster around the boundaries that matter: the timeout and whole minutes.
gaps = st.one_of(
    st.sampled_from(
        [
            TIMEOUT,
            TIMEOUT - US,
            TIMEOUT + US,
            TIMEOUT - timedelta(seconds=1),
            timedelta(minutes=1),
            timedelta(minutes=1) - US,
            timedelta(0),
        ]
    ),
    st.integers(0, 2_000_000_000).map(lambda us: timedelta(microseconds=us)),
)
# Mostly one key, so consecutive activities of a key meet the boundaries often.
keys = st.one_of(st.just(KEYS[0]), st.just(KEYS[0]), st.sampled_from(KEYS))
# How late an activity arrives: mostly on time, else anywhere in the backdating window,
# including its edge.
late = st.one_of(
    st.sampled_from([0, 0, 0, 1, 5, 59, 60]),
    st.integers(0, 60_000_000).map(lambda us: us / 1e6),
)
act = st.tuples(st.just("act"), keys, gaps, late)
sweep = st.tuples(st.just("sweep"), st.just(None), gaps, st.just(0))
events = st.lists(st.one_of(act, act, act, sweep), min_size=1, max_size=30)
K = KEYS[0]

EXAMPLES = int(os.environ.get("TUTOR_TIMES_PROPERTY_EXAMPLES", "60"))


@pytest.fixture(params=BACKENDS)
def property_app(request: pytest.FixtureRequest, store: str) -> Iterator[Flask]:
    yield from build(str(request.param), TUTOR_TIMES_STORE=store)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events)
@example([("act", K, timedelta(0), 0), ("act", K, TIMEOUT, 0)])
@example([("act", K, timedelta(0), 0), ("act", K, TIMEOUT - US, 0), ("act", K, TIMEOUT, 0)])
@example(
    [
        ("act", K, timedelta(0), 0),
        ("act", K, timedelta(minutes=1) - US, 0),
        ("sweep", None, TIMEOUT, 0),
        ("act", K, timedelta(0), 5),
    ]
)
@example(
    [
        ("act", K, timedelta(0), 0),
        ("act", K, timedelta(seconds=5), 5),
        ("act", K, TIMEOUT - US, 0),
        ("act", KEYS[1], timedelta(0), 0),
    ]
)
# a late activity moves the open session's start back
@example([("act", K, timedelta(0), 0), ("act", K, timedelta(seconds=30), 60)])
# ... and bridges it with the session its arrival had closed: the two become one
@example(
    [
        ("act", K, timedelta(0), 0),
        ("act", K, TIMEOUT + timedelta(seconds=30), 0),
        ("act", K, timedelta(seconds=1), 60),
    ]
)
# a sweep right before a late activity must not have closed its session
@example(
    [
        ("act", K, timedelta(0), 0),
        ("sweep", None, TIMEOUT + BACKDATE - US, 0),
        ("act", K, timedelta(0), 60),
    ]
)
@pytest.mark.slow
def test_sessions_match_the_reference(
    property_app: Flask, clock: Clock, drawn: list[tuple[Any, ...]]
) -> None:
    reset_tables(property_app)
    now = T0
    stream: list[tuple[Any, ...]] = []
    with property_app.app_context():
        for kind, key, gap, back_seconds in drawn:
            now += gap
            clock.set(now)
            if kind == "sweep":
                tutor_times.close_expired_sessions(now)
                stream.append(("sweep", now))
                continue
            t = now - timedelta(seconds=back_seconds)  # sometimes slightly out of order
            marker, unit, ip = key
            tutor_times.record_activity(
                "assessing", marker_id=marker, unit_id=unit, ip_address=ip, at=t
            )
            stream.append(("act", key, t))
        final = now + TIMEOUT + BACKDATE
        tutor_times.close_expired_sessions(final)
        stream.append(("sweep", final))
    got = sorted(
        (
            (s.marker_id, s.unit_id, s.ip_address),
            s.start_time,
            s.end_time,
            s.duration_minutes,
            len(s.activities),
        )
        for s in _sessions_with_activities(property_app)
    )
    assert got == reference(stream, TIMEOUT)


def _sessions_with_activities(app: Flask) -> list[Any]:
    ms = tutor_times.MarkingSession
    return stored(app, ms, selectinload(ms.activities))
