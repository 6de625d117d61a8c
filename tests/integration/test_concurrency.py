"""R5: concurrent first requests of one key create exactly one session, and every activity
is stored — from threads and from separate processes, with either store and with Redis down."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from demo.extensions import tutor_times

from ..conftest import BACKENDS, Clock, activities, build, make_app, sessions
from ..servers import free_port

THREADS = 16
PROCESSES = 4
PER_PROCESS = 4  # threads in each process: 16 first activities at once in all
#: how each run reaches its session store
STORE_MODES = ["redis", "sql", "redis-down"]


def store_config(mode: str) -> dict[str, Any]:
    if mode == "redis-down":
        # nothing listens there: every Redis call fails and the SQL-only path takes over
        return {
            "TUTOR_TIMES_STORE": "redis",
            "TUTOR_TIMES_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        }
    return {"TUTOR_TIMES_STORE": mode}


@pytest.fixture(params=STORE_MODES)
def store_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=BACKENDS)
def concurrent_app(
    request: pytest.FixtureRequest, store_mode: str, clock: Clock
) -> Iterator[Flask]:
    yield from build(str(request.param), **store_config(store_mode))


def record_at_once(app: Flask, barrier: Any, n: int) -> tuple[list[int], list[str]]:
    """``n`` threads of this process record the key's first activity past ``barrier``."""
    ids: list[int] = []
    errors: list[str] = []

    def first_request() -> None:
        with app.app_context():
            barrier.wait()
            try:
                activity = tutor_times.record_activity(
                    "assessing", marker_id=3, unit_id=1, ip_address="10.3.3.3"
                )
                ids.append(activity.marking_session_id)
            except BaseException as exc:  # collected, asserted by the caller
                errors.append(repr(exc))

    threads = [threading.Thread(target=first_request) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return ids, errors


def assert_one_session(app: Flask, ids: list[int], errors: list[str], expected: int) -> None:
    assert errors == []
    assert len(ids) == expected
    [s] = sessions(app)
    assert set(ids) == {s.id}
    assert len(activities(app)) == expected


def test_simultaneous_first_activities_share_one_session(concurrent_app: Flask) -> None:
    ids, errors = record_at_once(concurrent_app, threading.Barrier(THREADS), THREADS)
    assert_one_session(concurrent_app, ids, errors, THREADS)


def _process(config: dict[str, Any], barrier: Any, results: Any) -> None:
    """One app process (as a gunicorn worker would be), racing the others."""
    app = make_app("postgres", **config)
    results.put(record_at_once(app, barrier, PER_PROCESS))
