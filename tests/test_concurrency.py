"""R5: concurrent first requests of one key create exactly one session."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from demo.extensions import tutor_times

from .conftest import BACKENDS, Clock, activities, build, sessions

THREADS = 16


@pytest.fixture(params=BACKENDS)
def concurrent_app(request: pytest.FixtureRequest, store: str, clock: Clock) -> Iterator[Flask]:
    yield from build(str(request.param), TUTOR_TIMES_STORE=store)


def test_simultaneous_first_activities_share_one_session(concurrent_app: Flask) -> None:
    barrier = threading.Barrier(THREADS)
    results: list[Any] = []
    errors: list[BaseException] = []

    def first_request() -> None:
        with concurrent_app.app_context():
            barrier.wait()
            try:
                results.append(
                    tutor_times.record_activity(
                        "assessing", marker_id=3, unit_id=1, ip_address="10.3.3.3"
                    )
                )
            except BaseException as exc:  # collected, asserted below
                errors.append(exc)

    threads = [threading.Thread(target=first_request) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(results) == THREADS
    [s] = sessions(concurrent_app)
    assert {r.marking_session_id for r in results} == {s.id}
    assert len(activities(concurrent_app)) == THREADS
