"""B5 a Redis that never answers: how long one command waits before it gives up.

A redis-server of its own, frozen with SIGSTOP (the kernel still accepts connections;
nothing replies), asked for one PING by: the client tutor_times builds, redis-py with its
defaults, and redis-py with a socket timeout of 5 s and its default retries. Each is waited
for at most CAP seconds; a client still waiting then is reported as "more than CAP".
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import redis

from benchmarks.common import arguments, save
from tests.servers import OwnRedis
from tutor_times.store.redis_cache import redis_client

CAP_S = 30.0


def stall(client: redis.Redis, cap: float) -> float | None:
    """Seconds until ``client.ping()`` failed; None if it still waits after ``cap``."""
    done = threading.Event()
    took: list[float] = []

    def ping() -> None:
        started = time.monotonic()
        try:
            client.ping()
        except redis.RedisError:
            pass
        took.append(time.monotonic() - started)
        done.set()

    threading.Thread(target=ping, daemon=True).start()
    if not done.wait(cap):
        return None
    return round(took[0], 3)


def run(cap: float) -> dict[str, Any]:
    server = OwnRedis().start()
    assert server.proc is not None
    clients = {
        "tutor_times (0.25 s timeouts, no retries)": redis_client(server.url, {}, None),
        "redis-py defaults": redis.Redis.from_url(server.url),
        "redis-py, socket_timeout=5": redis.Redis.from_url(server.url, socket_timeout=5),
    }
    for client in clients.values():
        client.ping()  # connected while the server still answers
    results = []
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for name, client in clients.items():
            seconds = stall(client, cap)
            shown = f"more than {cap:.0f} s" if seconds is None else f"{seconds} s"
            print(f"  {name}: {shown}")
            results.append({"client": name, "seconds": seconds, "cap_s": cap})
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
    return {"benchmark": "B5 Redis stall", "results": results}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(__doc__, argv)
    print("B5 a Redis that never answers")
    if args.smoke:
        return run(cap=1.0)
    result = run(CAP_S)
    save("b5_redis_stall", result)
    return result


if __name__ == "__main__":
    main()
