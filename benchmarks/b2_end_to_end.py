"""B2 end to end: the demo app under gunicorn, one endpoint tracked and untracked.

The demo's inbox (a tutor's list of submissions to mark: one query) served by gunicorn
with one sync worker per core and twice that, loaded by wrk from the same machine. The
tracked and untracked routes run the same view; runs alternate so both see the same noise.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from benchmarks.common import (
    DATABASE_URL,
    REDIS_URL,
    ROOT,
    arguments,
    bench_app,
    ensure_database,
    forget_redis,
    fresh_schema,
    save,
    smoke_url,
    step,
)
from tests.servers import free_port

#: the same view: plain, plus the floor of tracking (raw EVALSHA + INSERT), and tracked
ROUTES = {
    "untracked": "/untracked/units/1/inbox",
    "floor": "/floor/units/1/inbox",
    "tracked": "/units/1/inbox",
}


def start_gunicorn(workers: int, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "benchmarks.b2_app:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/me")
            conn.getresponse().read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gunicorn did not start")


def login_cookie(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    body = json.dumps({"username": "tutor1", "password": "password"})
    conn.request("POST", "/login", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status
    cookie = response.getheader("Set-Cookie")
    assert cookie
    return cookie.split(";", 1)[0]


def wrk(port: int, path: str, cookie: str, seconds: float, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-H",
            f"Cookie: {cookie}",
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    if "Non-2xx" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    return {"rps": rps, "p99_ms": round(float(p99.group(1)) * scale, 2)}


def python_load(
    port: int, path: str, cookie: str, seconds: float, connections: int
) -> dict[str, float]:
    """Without wrk: keep-alive connections from threads (slower; it shares the CPUs)."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        while time.monotonic() < stop:
            started = time.perf_counter()
            conn.request("GET", path, headers={"Cookie": cookie})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    return {
        "rps": round(len(latencies) / seconds, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
    }


def run(
    database_url: str, worker_counts: list[int], seconds: float, runs: int, connections: int
) -> dict[str, Any]:
    ensure_database(database_url)
    app = bench_app(database_url)
    with step("schema"):
        fresh_schema(app)
    prefix = f"tt-bench-b2-{os.getpid()}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TUTOR_TIMES_BENCH_APP_DATABASE_URL": database_url,
        "TUTOR_TIMES_REDIS_PREFIX": prefix,
        "TUTOR_TIMES_BENCH_REDIS_URL": REDIS_URL,
    }
    load = wrk if shutil.which("wrk") else python_load
    results = []
    for workers in worker_counts:
        port = free_port()
        proc = start_gunicorn(workers, port, env)
        try:
            cookie = login_cookie(port)
            for path in ROUTES.values():
                load(port, path, cookie, min(2.0, seconds), connections)  # warm
            got: dict[str, list[dict[str, float]]] = {name: [] for name in ROUTES}
            for _ in range(runs):
                for name, path in ROUTES.items():
                    got[name].append(load(port, path, cookie, seconds, connections))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        row: dict[str, Any] = {"workers": workers, "connections": connections}
        for name, measured in got.items():
            row[name] = {
                "rps": round(statistics.median(m["rps"] for m in measured), 1),
                "p99_ms": round(statistics.median(m["p99_ms"] for m in measured), 2),
            }
        untracked = row["untracked"]["rps"]
        row["tracked_vs_untracked_rps"] = round(row["tracked"]["rps"] / untracked, 3)
        row["floor_vs_untracked_rps"] = round(row["floor"]["rps"] / untracked, 3)
        row["tracked_vs_floor_rps"] = round(row["tracked"]["rps"] / row["floor"]["rps"], 3)
        results.append(row)
        print(
            f"  {workers} workers: "
            + ", ".join(f"{n} {row[n]['rps']} req/s (p99 {row[n]['p99_ms']} ms)" for n in ROUTES)
            + f"; tracked/untracked {row['tracked_vs_untracked_rps']:.0%},"
            f" floor/untracked {row['floor_vs_untracked_rps']:.0%},"
            f" tracked/floor {row['tracked_vs_floor_rps']:.0%}"
        )
    forget_redis(bench_app(database_url, TUTOR_TIMES_REDIS_PREFIX=prefix))
    return {
        "benchmark": "B2 end to end",
        "load": load.__name__,
        "seconds": seconds,
        "runs": runs,
        "results": results,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(__doc__, argv)
    print("B2 end to end")
    if args.smoke:
        return run(smoke_url(DATABASE_URL), [1], seconds=1, runs=1, connections=2)
    cores = os.cpu_count() or 1
    result = run(DATABASE_URL, [cores, 2 * cores], seconds=10, runs=3, connections=16)
    save("b2_end_to_end", result)
    return result


if __name__ == "__main__":
    main()
