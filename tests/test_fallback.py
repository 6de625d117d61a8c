"""R9: when Redis fails, the host's view still answers and no activity is lost."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from flask import Flask

from demo.extensions import tutor_times

from .conftest import (
    BACKENDS,
    TASK,
    Clock,
    activities,
    build,
    built,
    cache_of,
    login,
    redis_of,
    sessions,
)
from .servers import OwnRedis, free_port


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


@pytest.mark.system
def test_redis_stopped_and_restarted_mid_session(
    backend_name: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server = OwnRedis().start()
    try:
        with built(
            backend_name,
            TUTOR_TIMES_STORE="redis",
            TUTOR_TIMES_REDIS_URL=server.url,
            TUTOR_TIMES_REDIS_RETRY_AFTER=0.2,
        ) as app:
            client = redis_of(app)
            prefix = app.config["TUTOR_TIMES_REDIS_PREFIX"]
            with app.app_context(), caplog.at_level(logging.WARNING, logger="tutor_times"):
                record = lambda: tutor_times.record_activity(  # noqa: E731
                    "assessing", marker_id=3, unit_id=1, ip_address="10.2.2.2"
                )
                first = record()
                assert client.keys(f"{prefix}:*")

                server.stop()
                clock.advance(minutes=5)
                during = record()  # through SQL only

                server.start()  # empty: everything Redis knew is lost
                time.sleep(0.3)  # past the breaker's pause
                clock.advance(minutes=5)
                after = record()
                assert client.keys(f"{prefix}:*"), "Redis is used again without a restart"
                clock.advance(minutes=1)
                hot = record()

            ids = {
                first.marking_session_id,
                during.marking_session_id,
                after.marking_session_id,
                hot.marking_session_id,
            }
            assert len(ids) == 1, "no split: one session across the outage and the data loss"
            assert len(activities(app)) == 4
            messages = [r.getMessage() for r in caplog.records]
            assert sum("Redis failed" in m for m in messages) == 1
            assert sum("Redis is back" in m for m in messages) == 1
    finally:
        server.stop()
