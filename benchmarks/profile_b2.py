"""Where a tracked request's extra time goes (B2's endpoint, in one process, no load).

Times the demo's inbox untracked, tracked, and tracked with ``record_activity`` replaced by
a no-op (the decorator's own cost), then the parts of ``record_activity`` as they run inside
the request, and a pyinstrument profile of the tracked request. Run after B2, on its database:
``python -m benchmarks.profile_b2``; writes results/b2_profile.txt.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

from benchmarks.common import RESULTS

CALLS = 1500


def median_us(call: Callable[[], Any], n: int = CALLS) -> float:
    for _ in range(100):
        call()
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return round(statistics.median(samples) / 1000)


def timed(samples: list[int], f: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            return f(*args, **kwargs)
        finally:
            samples.append(time.perf_counter_ns() - started)

    return wrapper


def main() -> None:
    from pyinstrument import Profiler

    from benchmarks.b2_app import app
    from benchmarks.b2_end_to_end import ROUTES
    from benchmarks.common import forget_redis
    from demo.extensions import tutor_times

    forget_redis(app)  # the cache of an earlier run names sessions of an earlier database

    client = app.test_client()
    login = client.post("/login", json={"username": "tutor1", "password": "password"})
    assert login.status_code == 200
    get = {name: (lambda p=path: client.get(p)) for name, path in ROUTES.items()}
    print(f"median of {CALLS} requests through the Flask test client, microseconds:")
    for name in ROUTES:
        print(f"  {name:10} {median_us(get[name]):6.0f}")

    real = tutor_times.record_activity
    tutor_times.record_activity = lambda *a, **k: None  # type: ignore[method-assign]
    print(f"  tracked, record_activity a no-op {median_us(get['tracked']):6.0f}")
    tutor_times.record_activity = real  # type: ignore[method-assign]

    with app.app_context():
        tracker = tutor_times.state.tracker
    parts: dict[str, list[int]] = {"record_activity": [], "redis lookup": [], "sql append": []}
    tutor_times.record_activity = timed(parts["record_activity"], real)  # type: ignore[method-assign]
    tracker.redis.lookup = timed(parts["redis lookup"], tracker.redis.lookup)  # type: ignore[method-assign,union-attr]
    tracker.sql.append_if_open = timed(parts["sql append"], tracker.sql.append_if_open)  # type: ignore[method-assign]
    median_us(get["tracked"])
    print("inside the tracked request, median microseconds:")
    for name, samples in parts.items():
        print(f"  {name:16} {statistics.median(samples) / 1000:6.0f}")

    profiler = Profiler(interval=0.0002)
    profiler.start()
    for _ in range(CALLS):
        get["tracked"]()
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False))


if __name__ == "__main__":
    out = io.StringIO()
    with redirect_stdout(out):
        main()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "b2_profile.txt").write_text(out.getvalue())
    sys.stdout.write(out.getvalue())
