"""Random activity streams against a tiny independent sessionizer written from R2-R4."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import selectinload

from demo.extensions import tutor_times

from .conftest import BACKENDS, T0, Clock, build, reset_tables, stored

TIMEOUT = timedelta(seconds=900)
US = timedelta(microseconds=1)
KEYS = [(3, 1, "10.0.0.1"), (3, 1, "10.0.0.2"), (4, 1, "10.0.0.1"), (3, 2, "10.0.0.1")]


@dataclass
class RefSession:
    key: tuple[int, int, str]
    start: datetime
    last: datetime
    count: int = 1
    end: datetime | None = field(default=None)


def reference(stream: list[tuple[Any, ...]], timeout: timedelta) -> list[tuple[Any, ...]]:
    """R2: join the key's open session when t - last < timeout, else start anew.
    R3/R4: a closed session ends at its last activity; minutes floored, at least one."""
    open_: dict[tuple[int, int, str], RefSession] = {}
    done: list[RefSession] = []
    for event in stream:
        if event[0] == "sweep":
            now = event[1]
            for key, s in list(open_.items()):
                if now - s.last >= timeout:
                    done.append(open_.pop(key))
            continue
        _, key, t = event
        s = open_.get(key)
        if s is not None and t - s.last < timeout:
            s.last = max(s.last, t)
            s.count += 1
        else:
            if s is not None:
                done.append(s)
            open_[key] = RefSession(key, t, t)
    done.extend(open_.values())
    return sorted(
        (s.key, s.start, s.last, max(1, (s.last - s.start) // timedelta(minutes=1)), s.count)
        for s in done
    )


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
act = st.tuples(st.just("act"), keys, gaps, st.sampled_from([0, 0, 0, 1, 5]))
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
        final = now + TIMEOUT
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


def test_the_reference_itself() -> None:
    """The oracle is checked by hand on a known stream, so it cannot drift unnoticed."""
    k = KEYS[0]
    stream = [
        ("act", k, T0),
        ("act", k, T0 + timedelta(minutes=14)),
        ("act", k, T0 + timedelta(minutes=13)),  # late, joins
        ("act", k, T0 + timedelta(minutes=29)),  # exactly TIMEOUT after 14: new
        ("sweep", T0 + timedelta(minutes=44)),  # closes the second
        ("act", k, T0 + timedelta(minutes=43)),  # late but its session is closed: new
    ]
    assert reference(stream, TIMEOUT) == [
        (k, T0, T0 + timedelta(minutes=14), 14, 3),
        (k, T0 + timedelta(minutes=29), T0 + timedelta(minutes=29), 1, 1),
        (k, T0 + timedelta(minutes=43), T0 + timedelta(minutes=43), 1, 1),
    ]
