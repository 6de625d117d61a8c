"""B7 hot path on a Redis Cluster: what ``record_activity`` costs on a key whose session is
open when the cache is a local Redis Cluster (3 primaries + 3 replicas, started for the run
and stopped by PID), against its own floor: one raw EVALSHA of the lookup script on the node
that serves the key's slot, plus one raw INSERT + COMMIT. The same store on one Redis runs in the same
rounds as a control: on a busy machine B1's own ratio moves too. Interleaved as B1, and
measured ``--runs`` times in a row, each run reported.

Then many processes on the same cluster: the load test of tests/system/test_many_processes.py, longer
(2 app instances of 4 gunicorn processes, 2 worker processes, 1,000 tutors over 200 units, 32
clients): throughput and latency of the tracked requests, the same checks of what was stored,
and the CPU time each kind of process spent per activity (the capacity model's costs).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
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

if TYPE_CHECKING:
    from tests.many_processes import Fleet, Served, Shape
    from tests.servers import OwnCluster

SIZE = 10_000
CALLS = 10_000
ROUND = 500
RUNS = 3
LOAD_SECONDS = 60.0
CLIENTS = 32
#: the load test's session timeout and sweep interval: sessions close while the load runs
TIMEOUT, BACKDATE, INTERVAL = 2.0, 0.5, 1.0


def run(
    database_url: str,
    size: int,
    calls: int,
    rounds: int,
    runs: int,
    load_seconds: float,
    shape: Shape,
) -> dict[str, Any]:
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
        results = []
        for n in range(runs):
            print(f"B7 run {n + 1} of {runs}")
            results.append(ratios({"run": n + 1, "rows": size, **measure(variants, calls, rounds)}))
        close_floor()
        forget_redis(single)
        load = many_processes(
            cluster, database_url, load_seconds, shape, max(1.0, load_seconds / 6)
        )
    finally:
        cluster.stop()
    return {
        "benchmark": "B7 hot path on a Redis Cluster",
        "calls": calls,
        "results": results,
        "load": load,
    }


def ratios(row: dict[str, Any]) -> dict[str, Any]:
    """The run's percentiles and its ratios, printed."""
    for name in ("cluster_store", "single_redis_store", "floor"):
        row[name] = percentiles(row[name])
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
    return row


def many_processes(
    cluster: OwnCluster, database_url: str, seconds: float, shape: Shape, idle_seconds: float
) -> dict[str, Any]:
    """The many-process load test on the cluster, ``seconds`` long after a short warm-up (every
    process has its connections): throughput, latency, what was stored, costs per activity."""
    from tests.many_processes import Fleet, load, log_everyone_in, tutors

    print(f"B7 many processes: {shape}, {CLIENTS} clients, {seconds:g} s")
    with tempfile.TemporaryDirectory() as folder:
        fleet = Fleet(
            database_url,
            cluster.url,
            cluster=True,
            folder=Path(folder),
            timeout=TIMEOUT,
            backdate=BACKDATE,
            interval=INTERVAL,
            shape=shape,
        )
        with step("start the processes"):
            fleet.start()
        try:
            with step(f"log {shape.tutors:,} tutors in, warm up"):
                everyone = asyncio.run(log_everyone_in(fleet.ports, tutors(shape), CLIENTS))
                warm = asyncio.run(
                    load(fleet.ports, everyone, min(3.0, seconds / 4), CLIENTS, seed=1)
                )
            with step(f"idle for {idle_seconds:g} s, once the warm-up's sessions are closed"):
                fleet.wait_until_all_closed(TIMEOUT + BACKDATE + INTERVAL + 30)
                start_idle = cpu_snapshot(fleet, cluster)
                time.sleep(idle_seconds)
                idle = cpu_snapshot(fleet, cluster, start_idle)
            before = cpu_snapshot(fleet, cluster)
            with step(f"{seconds:g} s of tracked requests"):
                cpu, started = time.process_time(), time.perf_counter()
                served = asyncio.run(load(fleet.ports, everyone, seconds, CLIENTS))
                elapsed = time.perf_counter() - started
                generator_cpu = time.process_time() - cpu
            during = cpu_snapshot(fleet, cluster, before)
            with step("until every session is closed"):
                waited = fleet.wait_until_all_closed(TIMEOUT + BACKDATE + INTERVAL + 30)
            closing = cpu_snapshot(fleet, cluster, before)
            span = time.perf_counter() - started
            checks = stored_checks(fleet, warm + served)
        finally:
            fleet.stop()
    answered = [s for s in served if 200 <= s.status < 300]
    activities = len(answered)
    latency = percentiles([int(s.seconds * 1e9) for s in served])
    result: dict[str, Any] = {
        "redis": "Redis Cluster, 3 primaries + 3 replicas",
        "instances": shape.instances,
        "processes_per_instance": shape.processes,
        "workers": shape.closers,
        "tutors": shape.tutors,
        "units": shape.units,
        "clients": CLIENTS,
        "session_timeout_s": TIMEOUT,
        "seconds": round(elapsed, 1),
        "requests": len(served),
        "rps": round(activities / elapsed, 1),
        **latency,
        "all_closed_after_s": round(waited, 1),
        **checks,
        "us_per_activity": costs(during, activities, elapsed, generator_cpu),
        # what the same processes spend when nobody marks (Redis's and the workers' timers,
        # the sweeps), taken out: the cost each activity adds
        "marginal_us_per_activity": marginal(during, idle, idle_seconds, elapsed, activities),
        "worker_us_per_session_closed": round(
            closing["closers"] * 1e6 / max(1, closing["sessions_closed"]), 1
        ),
        "worker_marginal_us_per_session_closed": round(
            max(0.0, closing["closers"] - idle["closers"] * span / idle_seconds)
            * 1e6
            / max(1, closing["sessions_closed"]),
            1,
        ),
        "sessions_closed": closing["sessions_closed"],
    }
    print(
        f"  {result['rps']} tracked req/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms;"
        f" {checks['lost']} lost, {checks['duplicates']} duplicates, sessions as the reference:"
        f" {checks['sessions_match_reference']}; µs of CPU per activity: {result['us_per_activity']}"
    )
    return result


def stored_checks(fleet: Fleet, served: list[Served]) -> dict[str, Any]:
    """What the load test asserts, counted: answers that were not 2xx, activities missing or
    stored twice (per tutor), keys with two open sessions, and whether the stored sessions are
    the reference sessionizer's over the stored activities."""
    from tests.integration.test_property import reference
    from tests.many_processes import per_tutor, stored_per_tutor

    stored = fleet.activities()
    answered, kept = per_tutor(served), stored_per_tutor(stored)
    sessions = fleet.sessions()
    stream = [("act", key, at) for key, at in stored]
    return {
        "non_2xx": sum(1 for s in served if not 200 <= s.status < 300),
        "lost": sum((answered - kept).values()),
        "duplicates": sum((kept - answered).values()),
        "keys_with_two_open": sum(1 for n in fleet.open_sessions_per_key().values() if n > 1),
        "activities": len(stored),
        "sessions": len(sessions),
        "activities_per_session": round(len(stored) / max(1, len(sessions)), 2),
        "sessions_match_reference": sessions == reference(stream, timedelta(seconds=TIMEOUT)),
    }


def cpu_snapshot(
    fleet: Fleet, cluster: OwnCluster, since: dict[str, Any] | None = None
) -> dict[str, Any]:
    """CPU seconds used so far by each kind of process (minus ``since``'s): the app's gunicorn
    processes, the workers, the database's server processes for the run's database, the Redis
    nodes (all six, and the primaries alone), with the EVALSHA calls the primaries ran."""
    from tests.many_processes import cpu_seconds

    pids = {
        "app": fleet.app_processes(),
        "closers": [p.pid for p in fleet.closers],
        "postgres": fleet.database_backends(),
    }
    if since is not None:  # a process that started meanwhile counts from zero
        pids = {kind: sorted(set(found) | set(since["pids"][kind])) for kind, found in pids.items()}
    now: dict[str, Any] = {kind: {p: cpu_seconds(p) for p in found} for kind, found in pids.items()}
    redis_cpu, primaries_cpu, evalsha = 0.0, 0.0, Counter[str]()
    for node in cluster.nodes:
        client = redis.Redis(port=node.port)
        info = client.info()
        used = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        redis_cpu += used
        if info["role"] == "master":
            primaries_cpu += used
            stats = client.info("commandstats").get("cmdstat_evalsha", {})
            evalsha.update({"calls": int(stats.get("calls", 0)), "usec": int(stats.get("usec", 0))})
    snapshot = {
        "pids": pids,
        "per_pid": now,
        "redis": redis_cpu,
        "redis_primaries": primaries_cpu,
        "evalsha": evalsha,
        "closed": int(
            fleet.scalar("SELECT count(*) FROM marking_sessions WHERE end_time IS NOT NULL")
        ),
    }
    if since is None:
        return snapshot
    delta: dict[str, Any] = {
        kind: sum(
            max(0.0, cpu - since["per_pid"][kind].get(pid, 0.0)) for pid, cpu in now[kind].items()
        )
        for kind in pids
    }
    delta["redis"] = redis_cpu - since["redis"]
    delta["redis_primaries"] = primaries_cpu - since["redis_primaries"]
    delta["evalsha"] = evalsha - since["evalsha"]
    delta["sessions_closed"] = snapshot["closed"] - since["closed"]
    return delta


def marginal(
    during: dict[str, Any], idle: dict[str, Any], idle_seconds: float, elapsed: float, n: int
) -> dict[str, float]:
    """CPU microseconds per activity above what each kind of process spends idle."""
    scale = elapsed / idle_seconds
    return {
        kind: round(max(0.0, during[kind] - idle[kind] * scale) * 1e6 / max(1, n), 1)
        for kind in ("app", "postgres", "redis_primaries", "redis", "closers")
    }


def costs(
    during: dict[str, Any], activities: int, elapsed: float, generator_cpu: float
) -> dict[str, float]:
    """Microseconds of CPU per tracked activity, by kind of process, over the measured load."""
    per = 1e6 / max(1, activities)
    calls = during["evalsha"]["calls"]
    return {
        "app": round(during["app"] * per, 1),
        "postgres": round(during["postgres"] * per, 1),
        "redis_primaries": round(during["redis_primaries"] * per, 1),
        "redis_all_nodes": round(during["redis"] * per, 1),
        "evalsha_per_activity": round(calls / max(1, activities), 2),
        "evalsha_usec_per_call": round(during["evalsha"]["usec"] / max(1, calls), 1),
        "workers": round(during["closers"] * per, 1),
        "load_generator": round(generator_cpu * per, 1),
        "machine_busy_share": round(
            (
                during["app"]
                + during["postgres"]
                + during["redis"]
                + during["closers"]
                + generator_cpu
            )
            / (2 * elapsed),
            2,
        ),
    }


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
    from tests.many_processes import Shape

    args = arguments(
        __doc__,
        argv,
        ("--calls", {"type": int, "default": CALLS}),
        ("--runs", {"type": int, "default": RUNS}),
        ("--seconds", {"type": float, "default": LOAD_SECONDS}),
    )
    if args.smoke:
        small = Shape(instances=1, processes=2, closers=1, tutors=20, units=4)
        return run(smoke_url(DATABASE_URL), 100, 60, 20, runs=1, load_seconds=1, shape=small)
    result = run(
        DATABASE_URL,
        SIZE,
        args.calls,
        ROUND,
        runs=args.runs,
        load_seconds=args.seconds,
        shape=Shape(),
    )
    save("b7_cluster", result)
    return result


if __name__ == "__main__":
    main()
