"""The tests of ``integration/test_faults.py`` that start servers or processes of their own."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest

from ..conftest import (
    TASK,
    Clock,
    activities,
    built,
    cache_of,
    login,
    redis_of,
)
from ..integration.test_faults import STALL_BOUND_S
from ..integration.test_faults import backend_name as backend_name  # noqa: F401  (a fixture)
from ..servers import OwnRedis


@pytest.mark.system
def test_a_redis_that_never_answers(
    backend_name: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server = OwnRedis().start()
    assert server.proc is not None
    try:
        with built(
            backend_name,
            TUTOR_TIMES_STORE="redis",
            TUTOR_TIMES_REDIS_URL=server.url,
            TUTOR_TIMES_REDIS_RETRY_AFTER=0.5,
        ) as app:
            tutor = login(app, "tutor1")
            breaker = cache_of(app).breaker
            client = redis_of(app)
            prefix = app.config["TUTOR_TIMES_REDIS_PREFIX"]
            with caplog.at_level(logging.WARNING, logger="tutor_times"):
                assert tutor.put(TASK, json={"status": "complete"}).status_code == 200

                # frozen: the kernel still accepts connections, nothing ever replies
                os.kill(server.proc.pid, signal.SIGSTOP)
                for _ in range(3):
                    clock.advance(minutes=1)
                    started = time.monotonic()
                    r = tutor.put(TASK, json={"status": "complete"})
                    assert time.monotonic() - started < STALL_BOUND_S
                    assert r.status_code == 200
                    assert r.get_json()["status"] == "complete"
                assert breaker.failures == 1, "the open breaker skipped Redis after one timeout"

                os.kill(server.proc.pid, signal.SIGCONT)
                time.sleep(0.6)  # past the breaker's pause
                clock.advance(minutes=1)
                assert tutor.put(TASK, json={"status": "complete"}).status_code == 200
                assert client.keys(f"{prefix}:*"), "Redis is used again without a restart"

            assert len(activities(app)) == 5
            assert len({a.marking_session_id for a in activities(app)}) == 1
            messages = [r.getMessage() for r in caplog.records]
            assert sum("Redis failed" in m and "Timeout" in m for m in messages) == 1
            assert sum("Redis is back" in m for m in messages) == 1
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
