"""`flask tutor-times rebuild`: after the timeout changed, the stored sessions become R2 under
the new timeout — exactly, once, and safely beside live tracking on the same keys."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from demo.extensions import db, tutor_times

from ..conftest import BACKENDS, T0, Clock, build, built, make_app
from .test_history import row, stored_sessions
from .test_property import KEYS, TIMEOUT, reference

NEW_TIMEOUTS = [timedelta(seconds=300), timedelta(seconds=1800)]


def history(seed: int, n: int = 300) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Random activities of the demo's keys, days before T0, with gaps around every timeout
    the tests use; the rows to import and the stream the reference takes."""
    rnd = random.Random(seed)
    t = T0 - timedelta(days=8)
    rows, stream = [], []
    for n_ in range(n):
        t += timedelta(seconds=rnd.choice([10, 299, 300, 301, 600, 899, 900, 1799, 1800, 4000]))
        key = rnd.choice(KEYS)
        rows.append(row(key, t, n_))
        stream.append(("act", key, t))
    return rows, stream


@pytest.fixture(params=BACKENDS)
def rebuild_backend(request: pytest.FixtureRequest, clock: Clock) -> Iterator[tuple[str, Flask]]:
    for app in build(str(request.param)):
        yield str(request.param), app


def app_with_timeout(backend: str, timeout: timedelta) -> Flask:
    """A second app on the same database, as after a restart with a new timeout."""
    return make_app(backend, TUTOR_TIMES_SESSION_TIMEOUT=timeout.total_seconds())


@pytest.mark.parametrize("new_timeout", NEW_TIMEOUTS, ids=["shorter", "longer"])
def test_a_rebuild_gives_r2_under_the_new_timeout_once(
    rebuild_backend: tuple[str, Flask], new_timeout: timedelta
) -> None:
    backend, app = rebuild_backend
    rows, stream = history(seed=int(new_timeout.total_seconds()))
    with app.app_context():
        tutor_times.import_activities(rows, source_key="before")
    assert stored_sessions(app) == reference(stream, TIMEOUT)
    changed = app_with_timeout(backend, new_timeout)
    runner = changed.test_cli_runner()
    first = runner.invoke(args=["tutor-times", "rebuild"])
    assert first.exit_code == 0, first.output
    assert stored_sessions(changed) == reference(stream, new_timeout)
    again = runner.invoke(args=["tutor-times", "rebuild"])
    assert f"rebuilt {len(set(KEYS))} keys (0 changed)" in again.output
    assert stored_sessions(changed) == reference(stream, new_timeout)
    with changed.app_context():
        db.engine.dispose()


def test_a_rebuild_of_one_unit_and_range_leaves_the_rest(
    rebuild_backend: tuple[str, Flask],
) -> None:
    backend, app = rebuild_backend
    rows, stream = history(seed=7)
    with app.app_context():
        tutor_times.import_activities(rows, source_key="before")
    new_timeout = timedelta(seconds=1800)
    changed = app_with_timeout(backend, new_timeout)
    day = (T0 - timedelta(days=6)).date()
    result = changed.test_cli_runner().invoke(
        args=[
            "tutor-times",
            "rebuild",
            "--unit",
            "1",
            "--from",
            str(day),
            "--to",
            str(day + timedelta(days=1)),
        ]
    )
    assert result.exit_code == 0, result.output
    old, new = reference(stream, TIMEOUT), reference(stream, new_timeout)
    got = stored_sessions(changed)
    start, end = datetime.combine(day, datetime.min.time(), T0.tzinfo), None
    end = start + timedelta(days=1)
    # other units, and sessions far from the day, are as before; the day's unit-1 sessions
    # are R2 under the new timeout (with whatever joined them across the day's edges)
    for s in old:
        if s[0][1] != 1 or s[2] < start - new_timeout or s[1] >= end + new_timeout:
            assert s in got
    for s in new:
        if s[0][1] == 1 and start <= s[1] < end:
            assert s in got
    assert any(s not in got for s in old)  # the rebuild did change something
    with changed.app_context():
        db.engine.dispose()


@contextmanager
def tracking_beside(app: Flask, live_at: datetime) -> Iterator[list[tuple[Any, ...]]]:
    """A thread per key of ``KEYS`` tracking it live (at ``live_at`` and up to 49 s before)
    until the block ends, 20 activities each at least; yields the activities as the
    reference sessionizer reads them, and fails if any thread's tracking raised."""
    errors: list[BaseException] = []
    stop = threading.Event()
    live: list[tuple[Any, ...]] = []

    def track(key: tuple[int, int, str]) -> None:
        with app.app_context():
            n = 0
            while not stop.is_set() or n < 20:
                at = live_at - timedelta(seconds=n % 50)
                try:
                    tutor_times.record_activity(
                        "inbox", marker_id=key[0], unit_id=key[1], ip_address=key[2], at=at
                    )
                except BaseException as exc:  # reported by the test, not lost in a thread
                    errors.append(exc)
                    return
                live.append(("act", key, at))
                n += 1

    threads = [threading.Thread(target=track, args=(k,)) for k in KEYS]
    for t in threads:
        t.start()
    try:
        yield live
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []


@pytest.mark.real
@pytest.mark.slow
def test_a_rebuild_beside_live_tracking_on_the_same_keys(clock: Clock) -> None:
    """Live activities join the imported sessions' keys while a rebuild rewrites them: every
    activity is kept once, and the sessions are R2 over all of them under the new timeout."""
    new_timeout = timedelta(seconds=600)
    with built("postgres") as app:
        rows, stream = history(seed=3)
        live_at = rows[-1]["created_at"] + timedelta(minutes=4)
        clock.set(live_at)
        with app.app_context():
            tutor_times.import_activities(rows, source_key="before")
        changed = app_with_timeout("postgres", new_timeout)
        with tracking_beside(changed, live_at) as live, changed.app_context():
            for _ in range(3):
                tutor_times.rebuild_sessions()
        with changed.app_context():
            clock.set(live_at + new_timeout + timedelta(minutes=2))
            tutor_times.close_expired_sessions()
            db.engine.dispose()
        assert stored_sessions(app) == reference(stream + live, new_timeout)
