"""Many processes at once: 8 gunicorn processes across 2 app instances and 2 worker processes,
1,000 tutors of 200 units making tracked requests for a bounded time (tests/many_processes.py).
Nothing is lost, nothing is counted twice, no key ever has two open sessions, and the stored
sessions are exactly R2-R4 over the stored activities."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ..conftest import PG_URL, require_real_services
from ..integration.test_property import reference
from ..many_processes import (
    Fleet,
    Served,
    load,
    log_everyone_in,
    per_tutor,
    stored_per_tutor,
    tutors,
)
from ..servers import OwnRedis

pytestmark = [pytest.mark.real, pytest.mark.system]

TIMEOUT = 2.0  # seconds: sessions close while the load runs
BACKDATE = 0.5
INTERVAL = 1.0  # between sweeps
LOAD_SECONDS = 20.0
CLIENTS = 32


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    require_real_services()
    server = OwnRedis().start()
    running = Fleet(
        PG_URL,
        server.url,
        cluster=False,
        folder=tmp_path,
        timeout=TIMEOUT,
        backdate=BACKDATE,
        interval=INTERVAL,
    )
    try:
        yield running.start()
    finally:
        running.stop()
        server.stop()


class Watch:
    """Reads, once a second while the load runs, how many open sessions each key has."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.most_open: Counter[tuple[int, int, str]] = Counter()
        self.closed_meanwhile = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        while not self.done.wait(1.0):
            self.most_open |= self.fleet.open_sessions_per_key()
            self.closed_meanwhile = int(
                self.fleet.scalar(
                    "SELECT count(*) FROM marking_sessions WHERE end_time IS NOT NULL"
                )
            )

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=30)


def run_load(fleet: Fleet) -> tuple[list[Served], Watch]:
    everyone = asyncio.run(log_everyone_in(fleet.ports, tutors(fleet.shape), CLIENTS))
    with Watch(fleet) as watch:
        served = asyncio.run(load(fleet.ports, everyone, LOAD_SECONDS, CLIENTS))
    return served, watch


def test_many_processes_lose_nothing_and_count_nothing_twice(fleet: Fleet) -> None:
    # two instances on two ports, of four processes each, and two workers: ten processes
    assert len(set(fleet.ports)) == 2
    assert len(fleet.app_processes()) == 8 and len(fleet.closers) == 2

    served, watch = run_load(fleet)

    # every tracked request answered 200 (none failed, none went unanswered)
    assert Counter(s.status for s in served) == Counter({200: len(served)}), fleet.logs()
    assert len(served) >= 300 and len(per_tutor(served)) >= 50
    # sessions were closed by the workers while the load ran, and never two open per key
    assert watch.closed_meanwhile > 0
    assert set(watch.most_open.values()) <= {1}

    # once idle, the workers close every session (R6)
    assert fleet.wait_until_all_closed(TIMEOUT + BACKDATE + INTERVAL + 20) < float("inf")

    # every 2xx has exactly one activity: per tutor, as many stored as answered
    stored = fleet.activities()
    assert stored_per_tutor(stored) == per_tutor(served)
    # the stored sessions are R2-R4 over the stored activities, computed independently
    stream = [("act", key, at) for key, at in stored]
    sessions = fleet.sessions()
    assert sessions == reference(stream, timedelta(seconds=TIMEOUT))
    # the load exercised both sides of R2: sessions continued, and keys started new ones
    assert any(n > 1 for *_, n in sessions)
    assert len(sessions) > len({key for key, _ in stored})
