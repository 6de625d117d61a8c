"""The tests of ``integration/test_lifecycle.py`` that start servers or processes of their own."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

import pytest
from flask import Flask

from demo.extensions import tutor_times

from ..conftest import built, redis_of, sessions
from ..integration.test_lifecycle import (
    BACKDATE,
    IDLE,
    TIMEOUT,
    Worker,
    all_closed,
    assert_exact,
    insert_idle_sessions,
    record,
    wait_until,
    worker_thread,
)
from ..integration.test_lifecycle import live_app as live_app  # noqa: F401  (a fixture)
from ..integration.test_lifecycle import own_redis as own_redis  # noqa: F401  (a fixture)
from ..integration.test_lifecycle import spawn as spawn  # noqa: F401  (a fixture)
from ..servers import OwnRedis


@pytest.mark.real
@pytest.mark.system
def test_the_worker_closes_a_session_in_time(live_app: Flask, spawn: Callable[..., Worker]) -> None:
    interval = 0.5
    worker = spawn(interval)
    try:
        with live_app.app_context():
            record()
            time.sleep(0.3)
            record()
        waited = wait_until(all_closed(live_app), IDLE + interval + 1)
        assert waited <= IDLE + interval + 1, worker.output()
        assert_exact(live_app)
    finally:
        assert worker.stop(signal.SIGTERM) == 0
    assert "received SIGTERM; stopping" in worker.output()
    assert "worker stopped" in worker.output()


@pytest.mark.real
@pytest.mark.system
def test_the_expiry_listener_closes_before_the_next_sweep(
    live_app: Flask, spawn: Callable[..., Worker]
) -> None:
    """With sweeps a minute apart, only the expiry event can close the session this soon."""
    worker = spawn(60)
    try:
        time.sleep(0.3)  # the first sweep has run and the listener is subscribed
        with live_app.app_context():
            record()
        waited = wait_until(all_closed(live_app), IDLE + 3)
        assert waited < IDLE + 3, worker.output()
        assert_exact(live_app)
    finally:
        assert worker.stop(signal.SIGINT) == 0


@pytest.mark.real
@pytest.mark.system
def test_a_killed_worker_restarted_later_closes_everything(
    live_app: Flask, spawn: Callable[..., Worker]
) -> None:
    worker = spawn(60)
    with live_app.app_context():
        for i in range(5):
            record(ip=f"10.5.5.{i}")
            record(ip=f"10.5.5.{i}")
    worker.stop(signal.SIGKILL)
    time.sleep(IDLE + 0.5)  # the keys expire with nobody listening: the events are lost
    assert not all_closed(live_app)()
    restarted = spawn(0.5)
    try:
        assert wait_until(all_closed(live_app), 5) < 5, restarted.output()
        assert len(sessions(live_app)) == 5
        assert_exact(live_app)
    finally:
        assert restarted.stop() == 0


@pytest.mark.real
@pytest.mark.system
def test_a_listener_started_after_the_keys_expired_still_closes_by_sweep(
    live_app: Flask, own_redis: OwnRedis, spawn: Callable[..., Worker]
) -> None:
    with live_app.app_context():
        record()
    prefix = live_app.config["TUTOR_TIMES_REDIS_PREFIX"]
    client = redis_of(live_app)
    assert wait_until(lambda: not client.keys(f"{prefix}:*"), IDLE + 3) < IDLE + 3
    worker = spawn(0.5)
    try:
        assert wait_until(all_closed(live_app), 3) < 3, worker.output()
        assert_exact(live_app)
    finally:
        worker.stop()


@pytest.mark.real
@pytest.mark.system
def test_flushall_mid_session_does_not_split_it(live_app: Flask, own_redis: OwnRedis) -> None:
    client = redis_of(live_app)
    with live_app.app_context():
        first = record()
        client.flushall()
        second = record()
        assert second.marking_session_id == first.marking_session_id
        third = record()  # and Redis knows the session again: the hot path
        assert third.marking_session_id == first.marking_session_id
    time.sleep(IDLE + 0.1)
    with live_app.app_context():
        assert tutor_times.close_expired_sessions() == 1
    assert_exact(live_app)


@pytest.mark.real
@pytest.mark.system
def test_two_worker_processes_share_the_work(live_app: Flask, spawn: Callable[..., Worker]) -> None:
    n = 3000
    workers = [spawn(0.1, TUTOR_TIMES_SWEEP_BATCH_SIZE=20) for _ in range(2)]
    try:
        # idle at once, for both running workers to find at their next sweep
        insert_idle_sessions(live_app, n)
        assert wait_until(all_closed(live_app), 60) < 60
    finally:
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0]
    closed = [
        [
            int(line.split("closed ")[1].split()[0])
            for line in w.output().splitlines()
            if "idle marking sessions" in line
        ]
        for w in workers
    ]
    assert sum(map(sum, closed)) == n, "each session closed exactly once"
    assert all(closed), f"both workers closed sessions: {[len(c) for c in closed]} batches"
    assert_exact(live_app)


@pytest.mark.real
@pytest.mark.system
def test_the_listener_reconnects_after_redis_restarts(
    live_app: Flask, own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tutor_times"):
        with worker_thread(live_app, interval=60) as thread:
            time.sleep(0.3)
            own_redis.stop()
            time.sleep(0.5)
            own_redis.start()  # a fresh server: notifications are off again
            text = "expiry listener reconnected"
            assert wait_until(lambda: text in caplog.text, 10) < 10, caplog.text
            with live_app.app_context():
                record()
            assert wait_until(all_closed(live_app), IDLE + 3) < IDLE + 3
            assert_exact(live_app)
    assert not thread.is_alive()


@pytest.mark.real
@pytest.mark.system
def test_a_redis_that_refuses_config_leaves_the_sweep_to_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Managed Redis services refuse CONFIG SET: one warning, and the sweep does the work."""
    server = OwnRedis(None, "--rename-command", "CONFIG", "").start()
    try:
        with built(
            "postgres",
            TUTOR_TIMES_REDIS_URL=server.url,
            TUTOR_TIMES_SESSION_TIMEOUT=TIMEOUT,
            TUTOR_TIMES_MAX_BACKDATE=BACKDATE,
        ) as app:
            with caplog.at_level(logging.WARNING, logger="tutor_times"):
                with worker_thread(app, interval=0.3):
                    with app.app_context():
                        record()
                    assert wait_until(all_closed(app), IDLE + 2) < IDLE + 2
                    assert_exact(app)
            warnings = [r for r in caplog.records if "expiry notifications" in r.getMessage()]
            assert len(warnings) == 1
            assert "periodic sweep alone" in warnings[0].getMessage()
    finally:
        server.stop()


@pytest.mark.real
@pytest.mark.system
def test_a_worker_started_while_redis_is_down_enables_events_once_it_is_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The listener retries with backoff, logs the outage once (not every second), and on
    reconnecting turns expiry events on: the session then closes by its event, long before
    the next sweep."""
    server = OwnRedis()  # its port is chosen, the server not started: connection refused
    try:
        with built(
            "postgres",
            TUTOR_TIMES_REDIS_URL=server.url,
            TUTOR_TIMES_SESSION_TIMEOUT=TIMEOUT,
            TUTOR_TIMES_MAX_BACKDATE=BACKDATE,
        ) as app:
            with caplog.at_level(logging.INFO, logger="tutor_times"):
                with worker_thread(app, interval=60):
                    time.sleep(2.5)  # attempts at 0, 1 and 3 s: two of them fail
                    down = [r for r in caplog.records if "cannot reach Redis" in r.getMessage()]
                    assert len(down) == 1, caplog.text
                    assert "redis.conf" not in caplog.text  # not blamed on the configuration
                    server.start()
                    text = "expiry listener reconnected"
                    assert wait_until(lambda: text in caplog.text, 10) < 10, caplog.text
                    flags = str(
                        redis_of(app).config_get("notify-keyspace-events")["notify-keyspace-events"]
                    )
                    assert "E" in flags and ("x" in flags or "A" in flags)
                    with app.app_context():
                        record()
                    assert wait_until(all_closed(app), IDLE + 3) < IDLE + 3
                    assert_exact(app)
    finally:
        server.stop()
