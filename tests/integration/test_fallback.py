"""R9: when Redis fails, the host's view still answers and no activity is lost."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from flask import Flask

from ..conftest import (
    BACKENDS,
    TASK,
    Clock,
    activities,
    build,
    cache_of,
    login,
    sessions,
)
from ..servers import free_port


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def dead_redis_app(backend_name: str, clock: Clock) -> Iterator[Flask]:
    # Nothing listens on this port: every connection is refused at once.
    yield from build(
        backend_name,
        TUTOR_TIMES_STORE="redis",
        TUTOR_TIMES_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )


def test_a_closed_redis_port_falls_back_to_sql(
    dead_redis_app: Flask, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    tutor = login(dead_redis_app, "tutor1")
    with caplog.at_level(logging.WARNING, logger="tutor_times"):
        for minute in range(3):
            assert tutor.put(TASK, json={"status": "complete"}).status_code == 200
            clock.advance(minutes=minute + 1)
    assert len(activities(dead_redis_app)) == 3
    [s] = sessions(dead_redis_app)
    assert s.end_time is None
    # one log line for the change of state, not one per request
    assert [r.getMessage() for r in caplog.records if "Redis failed" in r.getMessage()] != []
    assert sum("Redis failed" in r.getMessage() for r in caplog.records) == 1
    breaker = cache_of(dead_redis_app).breaker
    assert breaker.failures == 1  # the open breaker skipped Redis for the next two
