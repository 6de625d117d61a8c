"""B4 closing: how fast idle sessions are closed.

(a) Sweep throughput: 100k idle open sessions, one ``close_expired_sessions`` pass.
(b) Closing lag: a worker process (expiry listener + sweep) runs while tutors' activities
arrive; for each session, the time from TIMEOUT after its last activity to its closing,
which R6 bounds by MAX_BACKDATE + the sweep interval.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from benchmarks.common import (
    DATABASE_URL,
    ROOT,
    add_staff,
    arguments,
    bench_app,
    engine_of,
    ensure_database,
    fresh_schema,
    percentiles,
    save,
    smoke_url,
    step,
    vacuum,
)


def idle_sessions(app: Any, n: int, idle_for: timedelta) -> None:
    """``n`` open sessions on distinct keys of 200 tutors, each with one activity
    ``idle_for`` ago or up to two seconds a session earlier: a tutor's sessions follow one
    another, rather than all 500 of them being open at one instant (one R10 block, which
    closing would merge again at every batch)."""
    at = datetime.now(timezone.utc) - idle_for
    with engine_of(app).begin() as conn:
        add_staff(conn, 200, 1)
        conn.execute(
            sa.text(
                """
                INSERT INTO marking_sessions (marker_id, unit_id, ip_address, start_time,
                    created_at, updated_at)
                SELECT 1000 + g % 200, 1, '10.' || (g / 65536) || '.' || (g / 256 % 256)
                       || '.' || (g % 256), t, t, t
                FROM (SELECT g, CAST(:at AS timestamptz) - interval '2 seconds' * (g / 200) AS t
                      FROM generate_series(1, :n) AS g) AS spread
                """
            ),
            {"n": n, "at": at},
        )
        conn.execute(
            sa.text(
                "INSERT INTO session_activities (marking_session_id, action, created_at,"
                " updated_at) SELECT id, 'inbox', start_time, start_time FROM marking_sessions"
            )
        )
    vacuum(engine_of(app))


def sweep_throughput(database_url: str, n: int) -> dict[str, Any]:
    from demo.extensions import tutor_times

    app = bench_app(database_url)
    with step(f"{n:,} idle sessions"):
        fresh_schema(app)
        idle_sessions(app, n, timedelta(hours=1))
    with app.app_context():
        started = time.perf_counter()
        closed = tutor_times.close_expired_sessions()
        seconds = time.perf_counter() - started
    assert closed == n, (closed, n)
    rate = round(n / seconds)
    print(f"  closed {closed:,} in {seconds:.2f} s: {rate:,} sessions/s")
    return {"sessions": n, "seconds": round(seconds, 3), "sessions_per_s": rate}


def closing_lag(
    database_url: str, keys: int, spread_s: float, timeout_s: int, interval_s: float
) -> dict[str, Any]:
    from demo.extensions import tutor_times
    from tests.servers import OwnRedis

    server = OwnRedis().start()  # its own: the listener turns on keyspace notifications
    config = {
        "TUTOR_TIMES_REDIS_URL": server.url,
        "TUTOR_TIMES_REDIS_PREFIX": f"tt-bench-lag-{os.getpid()}",
        "TUTOR_TIMES_SESSION_TIMEOUT": timeout_s,
        "TUTOR_TIMES_SWEEP_INTERVAL": interval_s,
    }
    app = bench_app(database_url, **config)
    fresh_schema(app)
    with engine_of(app).begin() as conn:
        add_staff(conn, 200, 1)
    # the demo app reads TUTOR_TIMES_* settings from the environment
    env = {**os.environ, "PYTHONPATH": str(ROOT), **{k: str(v) for k, v in config.items()}}
    worker = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.b4_closing", "--worker", database_url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # the worker is up and listening
        rng = random.Random(7)
        plan = sorted((rng.uniform(0, spread_s), k) for k in range(keys))
        started = time.monotonic()
        with app.app_context():
            for offset, k in plan:
                delay = started + offset - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                tutor_times.record_activity(
                    "inbox",
                    marker_id=1000 + k % 200,
                    unit_id=1,
                    ip_address=f"10.7.{k // 250}.{k % 250}",
                )
        deadline = time.monotonic() + timeout_s + interval_s + 30
        engine = engine_of(app)
        query = sa.text("SELECT count(*) FROM marking_sessions WHERE end_time IS NULL")
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.scalar(query) == 0:
                    break
            time.sleep(0.2)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT extract(epoch FROM updated_at - end_time) FROM marking_sessions"
                    " WHERE end_time IS NOT NULL"
                )
            ).all()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            _, err = worker.communicate(timeout=30)
        finally:
            server.stop()
    assert len(rows) == keys, f"{len(rows)} of {keys} closed; worker said: {err[-2000:]}"
    lags_ns = [int((float(r[0]) - timeout_s) * 1e9) for r in rows]
    stats = percentiles(lags_ns)
    stats["max_ms"] = round(max(lags_ns) / 1e6, 1)
    print(
        f"  lag after TIMEOUT: p50 {stats['p50_ms']:.0f} ms, p99 {stats['p99_ms']:.0f} ms,"
        f" max {stats['max_ms']:.0f} ms (sweep interval {interval_s * 1000:.0f} ms)"
    )
    # R6: the sweep waits TIMEOUT + MAX_BACKDATE, so that a late activity finds its session
    # open; an expiry event at TIMEOUT finds the session not yet closable
    backdate_s = tutor_times.state_of(app).settings.max_backdate.total_seconds()
    return {
        "keys": keys,
        "timeout_s": timeout_s,
        "max_backdate_s": backdate_s,
        "sweep_interval_s": interval_s,
        **stats,
    }


def worker_main(database_url: str) -> None:
    """The worker process: the demo app on the benchmark database, `tutor-times worker`."""
    from flask.cli import ScriptInfo

    from demo import create_app

    app = create_app(
        "testing", SQLALCHEMY_DATABASE_URI=database_url, TUTOR_TIMES_IN_PROCESS_SWEEPER=False
    )
    app.cli.main(
        ["tutor-times", "worker"], standalone_mode=False, obj=ScriptInfo(create_app=lambda: app)
    )


def run(
    database_url: str, n: int, keys: int, spread_s: float, timeout_s: int, interval_s: float
) -> dict[str, Any]:
    ensure_database(database_url)
    print("B4 closing")
    return {
        "benchmark": "B4 closing",
        "sweep": sweep_throughput(database_url, n),
        "lag": closing_lag(database_url, keys, spread_s, timeout_s, interval_s),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(
        __doc__,
        argv,
        ("--worker", {"metavar": "DATABASE_URL", "help": argparse.SUPPRESS}),
    )
    if args.worker:
        worker_main(args.worker)
        return {}
    if args.smoke:
        return run(smoke_url(DATABASE_URL), 500, keys=20, spread_s=0.5, timeout_s=2, interval_s=0.5)
    result = run(DATABASE_URL, 100_000, keys=500, spread_s=10, timeout_s=5, interval_s=1.0)
    save("b4_closing", result)
    return result


if __name__ == "__main__":
    main()
