"""B7 hot path on a Redis Cluster: what ``record_activity`` costs on a key whose session is
open when the cache is a local Redis Cluster (3 primaries + 3 replicas, started for the run
and stopped by PID), against its own floor: one raw EVALSHA of the lookup script on the node
that serves the key's slot, plus one raw INSERT + COMMIT. The same store on one Redis runs in the same
rounds as a control: on a busy machine B1's own ratio moves too. Interleaved as B1.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import sqlalchemy as sa

from benchmarks.b1_hot_path import floor_call, recorder
from benchmarks.common import (
    DATABASE_URL,
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

SIZE = 10_000
CALLS = 10_000
ROUND = 500


def run(database_url: str, size: int, calls: int, rounds: int) -> dict[str, Any]:
    from demo.extensions import tutor_times
    from tests.servers import OwnCluster

    ensure_database(database_url)
    with step("a local Redis Cluster, 3 primaries + 3 replicas"):
        cluster = OwnCluster().start()
    try:
        app = bench_app(
            database_url, TUTOR_TIMES_REDIS_URL=cluster.url, TUTOR_TIMES_REDIS_CLUSTER=True
        )
        with step(f"schema and {size:,} rows"):
            fresh_schema(app)
            fill_closed_sessions(app, size - 1, days=365)
        # the control: the same store on one Redis (B1's), in the same rounds
        single = bench_app(database_url)
        variants = {"cluster_store": recorder(app, 3), "single_redis_store": recorder(single, 4)}
        store = tutor_times.state_of(app).tracker.redis
        assert store is not None
        # the floor's key: another key on the node that serves the tracked key's slot
        key = store.key(3, 1, "10.9.9.1")
        node = cluster.primary_of(key)
        floor_key = store.key(4, 1, "10.9.9.1")
        n = 2
        while cluster.primary_of(floor_key) is not node:
            floor_key, n = store.key(4, 1, f"10.9.9.{n}"), n + 1
        with engine_of(app).connect() as conn:
            open_id = conn.scalar(sa.text("SELECT max(id) FROM marking_sessions"))
        floor, close_floor = floor_call(database_url, node.url, int(open_id), key=floor_key)
        variants["floor"] = (nullcontext(), floor)
        samples = measure(variants, calls, rounds)
        close_floor()
        forget_redis(single)
    finally:
        cluster.stop()
    row: dict[str, Any] = {"rows": size, **{name: percentiles(t) for name, t in samples.items()}}
    row["cluster_vs_floor_p50"] = round(row["cluster_store"]["p50_ms"] / row["floor"]["p50_ms"], 2)
    row["cluster_vs_floor_p99"] = round(row["cluster_store"]["p99_ms"] / row["floor"]["p99_ms"], 2)
    row["cluster_vs_single_p50"] = round(
        row["cluster_store"]["p50_ms"] / row["single_redis_store"]["p50_ms"], 2
    )
    print(
        f"  p50 ms: cluster store {row['cluster_store']['p50_ms']}, floor {row['floor']['p50_ms']};"
        f" {row['cluster_vs_floor_p50']}x; one Redis {row['single_redis_store']['p50_ms']},"
        f" cluster/one Redis {row['cluster_vs_single_p50']}x"
    )
    return {"benchmark": "B7 hot path on a Redis Cluster", "calls": calls, "results": [row]}


def measure(variants: dict[str, tuple[Any, Any]], calls: int, rounds: int) -> dict[str, list[int]]:
    """``calls`` timed calls of each variant, in alternating rounds of ``rounds``."""
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
    return samples


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(__doc__, argv, ("--calls", {"type": int, "default": CALLS}))
    if args.smoke:
        return run(smoke_url(DATABASE_URL), 100, calls=60, rounds=20)
    result = run(DATABASE_URL, SIZE, calls=args.calls, rounds=ROUND)
    save("b7_cluster", result)
    return result


if __name__ == "__main__":
    main()
