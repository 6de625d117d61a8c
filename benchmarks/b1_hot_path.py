"""B1 hot path: what ``record_activity`` costs when the key's session is open.

Three ways to store one activity, interleaved round by round so they share the machine's
noise: the Redis store, the SQL-only store, and the floor — one raw EVALSHA of the same
lookup script with redis-py and one raw INSERT + COMMIT with psycopg, no ORM, no checks.
Each at two sizes of ``marking_sessions``. Then what the metrics add to that call: the
hooks one tracked request runs (an activity counted by path and action, the tracking time
observed), timed alone in a fresh process, with and without prometheus_client's
multiprocess mode, as a share of the Redis store's median call.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Any

import psycopg
import redis
import sqlalchemy as sa

from benchmarks.common import (
    DATABASE_URL,
    REDIS_URL,
    arguments,
    bench_app,
    engine_of,
    ensure_database,
    fill_closed_sessions,
    forget_redis,
    fresh_schema,
    percentiles,
    save,
    smoke_url,
    step,
    time_calls,
)

SIZES = [10_000, 1_000_000]
CALLS = 10_000
ROUND = 500


METRICS_CALLS = 200_000
#: the hooks one tracked request runs, timed in a process of their own (the multiprocess mode
#: is chosen when prometheus_client is first imported, so each mode needs a fresh process)
METRICS_PROBE = """
import sys, time
from tutor_times.core import metrics
n = int(sys.argv[1])
for _ in range(1000):
    metrics.recorded(metrics.CACHED, "assessing"); metrics.tracking_took(0.0006)
best = float("inf")
for _ in range(5):
    start = time.perf_counter()
    for _ in range(n):
        metrics.recorded(metrics.CACHED, "assessing")
        metrics.tracking_took(0.0006)
    best = min(best, (time.perf_counter() - start) / n)
print(best * 1e6)
"""


def metrics_cost_us(calls: int) -> dict[str, float]:
    """Microseconds the metrics hooks add to one tracked request, by mode (best of five)."""
    costs = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode, extra in (("single", {}), ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": folder})):
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            done = subprocess.run(
                [sys.executable, "-c", METRICS_PROBE, str(calls)],
                env={**env, **extra},
                capture_output=True,
                text=True,
                check=True,
            )
            costs[mode] = round(float(done.stdout), 2)
    return costs


def floor_call(
    database_url: str, redis_url: str, session_id: int, key: str | None = None
) -> tuple[Any, Any]:
    """One EVALSHA + one INSERT/COMMIT, as bare as the drivers allow. ``key``: the floor's
    Redis key (on a cluster node, one of the slots that node serves)."""
    from tutor_times.core.accounting import to_micros
    from tutor_times.store.redis_cache import LOOKUP

    client = redis.Redis.from_url(redis_url)
    sha = client.script_load(LOOKUP)
    key = key or f"tt-bench-floor:session:{session_id}"
    client.hset(key, mapping={"sid": session_id, "last": to_micros(datetime.now(timezone.utc))})
    url = sa.make_url(database_url).set(drivername="postgresql")
    conn = psycopg.connect(url.render_as_string(hide_password=False))
    insert = (
        "INSERT INTO session_activities (marking_session_id, action, created_at, updated_at)"
        " VALUES (%s, 'assessing', %s, %s)"
    )

    def call() -> None:
        now = datetime.now(timezone.utc)
        client.evalsha(sha, 1, key, to_micros(now), 900_000_000, 900_000)
        with conn.cursor() as cur:
            cur.execute(insert, (session_id, now, now))
        conn.commit()

    def close() -> None:
        client.delete(key)
        conn.close()

    return call, close


def recorder(app: Any, marker: int) -> tuple[Any, Any]:
    """(the app's context, a call recording one activity of ``marker``'s open session)."""
    from demo.extensions import tutor_times

    # A tracked view runs inside its request's app context: so does each timed call.
    context = app.app_context()

    def call() -> None:
        tutor_times.record_activity("assessing", marker_id=marker, unit_id=1, ip_address="10.9.9.1")

    with context:
        call()  # opens the key's session: every timed call continues it
    return context, call


def run(database_url: str, sizes: list[int], calls: int, rounds: int) -> dict[str, Any]:
    ensure_database(database_url)
    redis_app = bench_app(database_url, TUTOR_TIMES_STORE="redis")
    sql_app = bench_app(database_url, TUTOR_TIMES_STORE="sql")
    results = []
    for size in sizes:
        print(f"B1 with {size:,} rows in marking_sessions")
        with step("schema and rows"):
            fresh_schema(redis_app)
            forget_redis(redis_app)
            fill_closed_sessions(redis_app, size - 2, days=365)

        variants = {"redis_store": recorder(redis_app, 3), "sql_store": recorder(sql_app, 4)}
        with engine_of(redis_app).connect() as conn:
            open_id = conn.scalar(sa.text("SELECT max(id) FROM marking_sessions"))
        floor, close_floor = floor_call(database_url, REDIS_URL, int(open_id))
        variants["floor"] = (nullcontext(), floor)
        samples: dict[str, list[int]] = {name: [] for name in variants}
        with step(f"{calls:,} calls each, in rounds of {rounds}"):
            for context, call in variants.values():  # warm: connections, compiled statements
                with context:
                    time_calls(call, 50)
            done = 0
            while done < calls:
                n = min(rounds, calls - done)
                for name, (context, call) in variants.items():
                    with context:
                        samples[name] += time_calls(call, n)
                done += n
        close_floor()
        row: dict[str, Any] = {"rows": size}
        for name, times in samples.items():
            row[name] = percentiles(times)
        row["redis_vs_floor_p50"] = round(row["redis_store"]["p50_ms"] / row["floor"]["p50_ms"], 2)
        row["redis_vs_floor_p99"] = round(row["redis_store"]["p99_ms"] / row["floor"]["p99_ms"], 2)
        row["sql_vs_redis_p50"] = round(
            row["sql_store"]["p50_ms"] / row["redis_store"]["p50_ms"], 2
        )
        costs = metrics_cost_us(METRICS_CALLS if calls >= 1000 else 1000)
        row["metrics_us"] = costs
        row["metrics_share_of_redis_p50"] = round(
            max(costs.values()) / 1000 / row["redis_store"]["p50_ms"], 4
        )
        results.append(row)
        print(
            f"  metrics: {costs['single']} us (one process), {costs['multiprocess']} us"
            f" (multiprocess) per tracked request:"
            f" {row['metrics_share_of_redis_p50']:.1%} of the Redis store's p50"
        )
        print(
            f"  p50 ms: redis {row['redis_store']['p50_ms']}, sql {row['sql_store']['p50_ms']},"
            f" floor {row['floor']['p50_ms']}; redis/floor {row['redis_vs_floor_p50']}x,"
            f" sql/redis {row['sql_vs_redis_p50']}x"
        )
    forget_redis(redis_app)
    return {"benchmark": "B1 hot path", "calls": calls, "results": results}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(
        __doc__,
        argv,
        ("--sizes", {"type": int, "nargs": "+", "default": SIZES}),
        ("--calls", {"type": int, "default": CALLS}),
    )
    if args.smoke:
        return run(smoke_url(DATABASE_URL), [100, 1_000], calls=60, rounds=20)
    result = run(DATABASE_URL, args.sizes, calls=args.calls, rounds=ROUND)
    save("b1_hot_path", result)
    return result


if __name__ == "__main__":
    main()
