"""The tests of ``integration/test_concurrency.py`` that start servers or processes of their own."""

from __future__ import annotations

import multiprocessing

import pytest

from ..conftest import built
from ..integration.test_concurrency import (
    PER_PROCESS,
    PROCESSES,
    _process,
    assert_one_session,
    store_config,
)
from ..integration.test_concurrency import store_mode as store_mode  # noqa: F401  (a fixture)


@pytest.mark.real
@pytest.mark.system
def test_simultaneous_first_activities_from_processes(store_mode: str) -> None:
    config = store_config(store_mode)
    with built("postgres", **config) as app:
        config["TUTOR_TIMES_REDIS_PREFIX"] = app.config["TUTOR_TIMES_REDIS_PREFIX"]
        spawn = multiprocessing.get_context("spawn")
        barrier = spawn.Barrier(PROCESSES * PER_PROCESS)
        results = spawn.Queue()
        processes = [
            spawn.Process(target=_process, args=(config, barrier, results))
            for _ in range(PROCESSES)
        ]
        for p in processes:
            p.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for p in processes:
            p.join(timeout=30)
            assert p.exitcode == 0
        ids = [i for got, _ in outcomes for i in got]
        errors = [e for _, got in outcomes for e in got]
        assert_one_session(app, ids, errors, PROCESSES * PER_PROCESS)
