"""The tests of ``integration/test_fallback.py`` that start servers or processes of their own."""

from __future__ import annotations

import logging
import time

import pytest

from demo.extensions import tutor_times

from ..conftest import (
    Clock,
    activities,
    built,
    redis_of,
)
from ..integration.test_fallback import backend_name as backend_name  # noqa: F401  (a fixture)
from ..servers import OwnRedis


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
