"""R6: every session is closed within TIMEOUT + MAX_BACKDATE + the sweep interval of its
last activity,
with the exact end time, whatever happens to Redis events or to the worker."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from demo.extensions import db, tutor_times
from tutor_times.closing import worker as worker_module

from ..conftest import BACKENDS, PG_URL, T0, Clock, activities, build, built, sessions
from ..servers import OwnRedis

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 1  # second
BACKDATE = 0.5  # second: how late an activity may arrive, so the sweep waits this much longer
IDLE = TIMEOUT + BACKDATE  # a session may be closed this long after its last activity (R6)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis().start()
    yield server
    server.stop()


@pytest.fixture
def live_app(own_redis: OwnRedis) -> Iterator[Flask]:
    """PostgreSQL + a Redis of our own, the real clock, a one-second timeout."""
    yield from build(
        "postgres",
        TUTOR_TIMES_REDIS_URL=own_redis.url,
        TUTOR_TIMES_SESSION_TIMEOUT=TIMEOUT,
        TUTOR_TIMES_MAX_BACKDATE=BACKDATE,
    )


class Worker:
    """`flask tutor-times worker` in a process of its own, on the live app's settings."""

    def __init__(self, app: Flask, tmp_path: Path, interval: float, **settings: object) -> None:
        self.log = tmp_path / f"worker-{time.monotonic_ns()}.log"
        env = {
            **os.environ,
            "FLASK_APP": "wsgi",
            "DEMO_CONFIG": "development",
            "DATABASE_URL": PG_URL,
            "TUTOR_TIMES_REDIS_URL": app.config["TUTOR_TIMES_REDIS_URL"],
            "TUTOR_TIMES_REDIS_PREFIX": app.config["TUTOR_TIMES_REDIS_PREFIX"],
            "TUTOR_TIMES_SESSION_TIMEOUT": str(TIMEOUT),
            "TUTOR_TIMES_MAX_BACKDATE": str(BACKDATE),
            **{key: str(value) for key, value in settings.items()},
        }
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flask",
                    "tutor-times",
                    "worker",
                    "--interval",
                    str(interval),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.wait_for("worker started")

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)


@pytest.fixture
def spawn(live_app: Flask, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Starts workers; every one still running at the end is killed, whatever the test did."""
    started: list[Worker] = []

    def start(interval: float, **settings: object) -> Worker:
        worker = Worker(live_app, tmp_path, interval, **settings)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(timeout=20)


def record(ip: str = "10.4.4.4", marker: int = 3) -> Any:
    return tutor_times.record_activity("assessing", marker_id=marker, unit_id=1, ip_address=ip)


def wait_until(condition: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            return float("inf")
        time.sleep(0.02)
    return time.monotonic() - start


def all_closed(app: Flask) -> Callable[[], bool]:
    return lambda: all(s.end_time is not None for s in sessions(app))


def assert_exact(app: Flask) -> None:
    """R3/R4 on every session: end = its last activity, minutes floored, at least one."""
    by_session: dict[int, list[datetime]] = {}
    for a in activities(app):
        by_session.setdefault(a.marking_session_id, []).append(a.created_at)
    for s in sessions(app):
        assert s.end_time == max(by_session[s.id])
        assert s.duration_minutes == max(1, (s.end_time - s.start_time) // timedelta(minutes=1))


@pytest.mark.real
@pytest.mark.slow
def test_two_sweepers_at_once_close_each_session_exactly_once(clock: Clock) -> None:
    n = 3000
    with built("postgres", TUTOR_TIMES_SWEEP_BATCH_SIZE=100) as app:
        insert_idle_sessions(app, n)
        nows = [T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
        counts: list[int] = []
        barrier = threading.Barrier(2)

        def sweeper(now: datetime) -> None:
            with app.app_context():
                barrier.wait()
                counts.append(tutor_times.close_expired_sessions(now))

        threads = [threading.Thread(target=sweeper, args=(now,)) for now in nows]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sum(counts) == n, counts
        closed = sessions(app)
        assert all(s.end_time is not None for s in closed)
        assert {s.updated_at for s in closed} <= set(nows)
        assert_exact(app)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_ten_thousand_idle_sessions_close_in_batches(
    backend: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    n = 10_000
    with built(backend, TUTOR_TIMES_SWEEP_BATCH_SIZE=1000) as app:
        insert_idle_sessions(app, n)
        with app.app_context(), caplog.at_level(logging.INFO, logger="tutor_times"):
            assert tutor_times.close_expired_sessions(T0 + timedelta(hours=1)) == n
        batches = [
            r.getMessage() for r in caplog.records if "idle marking sessions" in r.getMessage()
        ]
        assert batches == ["closed 1000 idle marking sessions"] * 10
        with app.app_context():
            ms = tutor_times.MarkingSession
            still_open = db.session.scalar(sa.select(sa.func.count()).where(ms.end_time.is_(None)))
            assert still_open == 0
            # spot-check exactness without loading 10k rows through the ORM
            durations = db.session.execute(
                sa.select(ms.duration_minutes, sa.func.count()).group_by(ms.duration_minutes)
            ).all()
            assert dict(durations) == {3: n}


def insert_idle_sessions(app: Flask, n: int) -> None:
    """n open sessions of one tutor on n addresses, the i-th with activities 4i minutes
    before T0 and 3m30s later: one after another, as a tutor's sessions come (all n at one
    instant would be one R10 block, which closing merges again at every batch)."""
    ms, act = tutor_times.MarkingSession, tutor_times.SessionActivity

    def start(i: int) -> datetime:
        return T0 - timedelta(minutes=4 * i)

    with app.app_context():
        db.session.execute(
            sa.insert(ms),
            [
                {
                    "id": i + 1,
                    "marker_id": 3,
                    "unit_id": 1,
                    "ip_address": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                    "start_time": start(i),
                    "created_at": start(i),
                    "updated_at": start(i),
                }
                for i in range(n)
            ],
        )
        db.session.execute(
            sa.insert(act),
            [
                {
                    "marking_session_id": i // 2 + 1,
                    "action": "assessing",
                    "created_at": start(i // 2) + (i % 2) * timedelta(minutes=3, seconds=30),
                    "updated_at": start(i // 2),
                }
                for i in range(2 * n)
            ],
        )
        if db.engine.dialect.name == "postgresql":
            db.session.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('marking_sessions', 'id'), :n)"),
                {"n": n},
            )
        db.session.commit()


def test_the_in_process_sweeper_closes_idle_sessions(tmp_path: Path) -> None:
    """Embedded mode: no worker, the app's own thread closes sessions."""
    with built(
        "sqlite",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'embedded.sqlite'}",
        TUTOR_TIMES_IN_PROCESS_SWEEPER=True,
        TUTOR_TIMES_SWEEP_INTERVAL=0.1,
        TUTOR_TIMES_SESSION_TIMEOUT=0.3,
    ) as app:
        try:
            with app.app_context():
                record()
                assert tutor_times.state_of(app).sweeper is not None
            assert wait_until(all_closed(app), 3) < 3
            assert_exact(app)
        finally:
            with app.app_context():
                tutor_times.stop_sweeper()
            sweeper = tutor_times.state_of(app).sweeper
            assert sweeper is not None and sweeper.thread is not None
            assert not sweeper.thread.is_alive()


@contextlib.contextmanager
def worker_thread(app: Flask, interval: float) -> Iterator[threading.Thread]:
    """run_worker in a thread of this process, stopped on leaving the block."""
    stop = threading.Event()

    def target() -> None:
        with app.app_context():
            tutor_times.run_worker(interval=interval, stop=stop)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=15)


@pytest.mark.parametrize("sweeper", [False, True])
def test_an_app_without_a_closer_warns_when_sessions_stay_open(
    clock: Clock, caplog: pytest.LogCaptureFixture, sweeper: bool
) -> None:
    """With a Redis URL the in-process sweeper is off, and sessions close only if a worker or
    cron runs: an app that finds sessions open long past idle says so at start-up."""
    with built("sqlite", TUTOR_TIMES_IN_PROCESS_SWEEPER=sweeper) as app:
        with app.app_context():
            tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.0.0.1")
        if sweeper:
            with app.app_context():
                tutor_times.stop_sweeper()
        clock.advance(hours=3)
        with caplog.at_level(logging.WARNING, logger="tutor_times"):
            app.test_client().get("/tutor-times/openapi.json")
            app.test_client().get("/tutor-times/openapi.json")
        warnings = [r for r in caplog.records if "no worker or cron sweep" in r.getMessage()]
        assert len(warnings) == (0 if sweeper else 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_worker_starts_a_pass_every_interval_however_long_a_pass_takes(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R6 closes a session within TIMEOUT + MAX_BACKDATE + the sweep interval of its last
    activity: so passes start an interval apart, not an interval after the last one ended;
    after a pass longer than the interval the next starts at once; after a failed pass the
    worker waits a whole interval (no retries back to back). Time is the test's own."""
    clock = [0.0]
    # (seconds a pass takes, whether it fails): a slow failure is retried after an interval
    passes = iter([(0.6, False), (1.5, False), (1.0, True), (0.1, False)])

    def timed_pass(now: datetime | None = None) -> int:
        seconds, fails = next(passes)
        clock[0] += seconds
        if fails:
            raise RuntimeError("the database went away")
        return 0

    class Waits(threading.Event):
        """The stop event: records each wait, lets the test's time pass, stops after four."""

        def __init__(self) -> None:
            super().__init__()
            self.waits: list[float] = []

        def wait(self, timeout: float | None = None) -> bool:
            assert timeout is not None
            self.waits.append(round(timeout, 6))
            clock[0] += timeout
            if len(self.waits) == 4:
                self.set()
            return self.is_set()

    monkeypatch.setattr(worker_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    stop = Waits()
    with built(backend) as app:
        monkeypatch.setattr(tutor_times, "close_expired_sessions", timed_pass)
        worker_module.Worker(app, tutor_times, interval=0.8, listen=False, stop=stop).work()
    assert stop.waits == [0.2, 0.0, 0.8, 0.7]
