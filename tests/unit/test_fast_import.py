"""The tests of ``integration/test_fast_import.py`` that need no app and no database."""

from __future__ import annotations

import gc
import io
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tutor_times.core.errors import InvalidActivityError
from tutor_times.history import importer as history
from tutor_times.history.importer import in_background
from tutor_times.history.rows import (
    MALFORMED,
    ROW_FIELDS,
    Checks,
    Rejected,
    RowChecker,
)
from tutor_times.history.sources import csv_rows

from ..integration.test_fast_import import ACTIONS, NOW


def test_an_ip_address_is_checked_once_and_stored_by_the_policy() -> None:
    calls: list[str] = []

    def policy(ip: str) -> str:
        calls.append(ip)
        return f"hashed-{ip}"

    checker = RowChecker(Checks(ACTIONS, policy, timedelta(0)))
    for _ in range(3):
        assert checker.ip("10.0.0.1") == "hashed-10.0.0.1"
    assert calls == ["10.0.0.1"]
    with pytest.raises(InvalidActivityError):
        checker.ip("10.0.0.999")


def test_a_csv_skips_blank_lines_and_counts_a_short_row_malformed() -> None:
    text = io.StringIO(
        "marker_id,unit_id,ip_address,action,project_id,task_id,task_definition_id,created_at\n"
        "\n"
        "3,1,10.0.0.1,inbox,, ,,2025-01-01T00:00:00+00:00\n"
        "3,1,10.0.0.1\n"
        "x,1,10.0.0.1,inbox,,,,2025-01-01T00:00:00+00:00\n"
    )
    got = list(csv_rows(text))
    # keyed by what it says (None: the importer makes the key from the checked fields)
    assert got[0] == (3, 1, "10.0.0.1", "inbox", None, None, None, NOW.replace(year=2025), None)
    assert [type(r) for r in got[1:]] == [Rejected, Rejected]
    assert all(isinstance(r, Rejected) and r.reason == MALFORMED for r in got[1:])
    assert len(ROW_FIELDS) == len(got[0])


def test_reading_ahead_gives_every_item_in_order_and_raises_the_readers_error() -> None:
    def items() -> Iterator[int]:
        yield from range(5)
        raise ValueError("the CSV lacks a column")

    got: list[int] = []
    with pytest.raises(ValueError, match="lacks a column"):
        for item in in_background(items()):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_a_consumer_that_stops_early_stops_the_reader() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for n in range(1000):
            produced.append(n)
            yield n

    for item in in_background(items()):
        if item == 2:
            break
    assert len(produced) < 10
    assert not [t for t in threading.enumerate() if t.name == "tutor-times-import-reader"]


def test_imports_leave_the_garbage_collector_as_they_found_it() -> None:
    """Its passes are made rarer while imports run (two at once in one process too), and
    put back when the last one ends: a host's process keeps its own settings."""
    before = gc.get_threshold()
    with history.fewer_collections():
        assert gc.get_threshold()[0] == history.GC_YOUNGEST
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with history.fewer_collections():
            pass
        assert gc.get_threshold()[0] == history.GC_YOUNGEST
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_imports_leave_the_threads_switch_interval_as_they_found_it() -> None:
    """While imports run, a thread that waited on the database takes the interpreter back
    from the reading thread sooner (two imports at once too); the last one to end puts the
    process's interval back (a process's own, whatever it was: Python's default here)."""
    found = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        with history.quicker_switches():
            assert sys.getswitchinterval() == history.SWITCH_INTERVAL < 0.005
            with history.quicker_switches():
                pass
            assert sys.getswitchinterval() == history.SWITCH_INTERVAL
        assert sys.getswitchinterval() == 0.005
    finally:
        sys.setswitchinterval(found)
