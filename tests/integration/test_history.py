"""History: imported activities are placed by R1-R4 exactly as live tracking would have placed
them, merged with the sessions already stored, and importing the same rows twice adds nothing."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import selectinload

from demo.extensions import db, tutor_times
from demo.seed import seed
from tutor_times.history.importer import Importer
from tutor_times.history.placer import Placer
from tutor_times.history.rows import (
    DUPLICATE,
    MALFORMED,
    NOT_ALLOWED,
    UNKNOWN_UNIT,
    UNKNOWN_USER,
    Rejected,
)

from ..conftest import BACKENDS, T0, Clock, build, make_app, reset_tables, sessions, stored
from .test_property import BACKDATE, KEYS, TIMEOUT, gaps, reference

EXAMPLES = int(os.environ.get("TUTOR_TIMES_PROPERTY_EXAMPLES", "60"))
#: history starts this long before the test clock's start
PAST = timedelta(days=3)


@pytest.fixture(params=BACKENDS)
def history_app(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Flask]:
    yield from build(str(request.param))


def row(
    key: tuple[int, int, str], at: datetime, n: int, action: str = "assessing"
) -> dict[str, Any]:
    marker, unit, ip = key
    return {
        "marker_id": marker,
        "unit_id": unit,
        "ip_address": ip,
        "action": action,
        "task_id": 7,
        "created_at": at,
        "import_key": n,
    }


def stored_sessions(app: Flask) -> list[tuple[Any, ...]]:
    ms = tutor_times.MarkingSession
    return sorted(
        (
            (s.marker_id, s.unit_id, s.ip_address),
            s.start_time,
            s.end_time,
            s.duration_minutes,
            len(s.activities),
        )
        for s in stored(app, ms, selectinload(ms.activities))
    )


def close_everything(clock: Clock) -> None:
    final = clock.now + TIMEOUT + BACKDATE
    clock.set(final)
    tutor_times.close_expired_sessions(final)


K = KEYS[0]


def test_an_import_extends_joins_and_bridges_stored_sessions(
    history_app: Flask, clock: Clock
) -> None:
    """Two live sessions 40 minutes apart; imported history before, between and after them."""
    with history_app.app_context():
        clock.set(T0)
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address=K[2])
        clock.set(T0 + timedelta(minutes=40))
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address=K[2])
        clock.set(T0 + timedelta(hours=2))
        history = [
            T0 - timedelta(minutes=10),  # moves the first session's start back
            T0 + timedelta(minutes=14),  # extends the first one ...
            T0 + timedelta(minutes=27),  # ... and bridges it with the second
            T0 + timedelta(minutes=70),  # a session of its own, closed
        ]
        report = tutor_times.import_activities(
            [row(K, t, n) for n, t in enumerate(history)], source_key="test"
        )
        assert (report.read, report.imported, report.skipped_total) == (4, 4, 0)
    got = stored_sessions(history_app)
    assert got == [
        (K, T0 - timedelta(minutes=10), T0 + timedelta(minutes=40), 50, 5),
        (K, T0 + timedelta(minutes=70), T0 + timedelta(minutes=70), 1, 1),
    ]


def test_importing_the_same_rows_twice_adds_nothing(history_app: Flask, clock: Clock) -> None:
    rows = [row(K, T0 - timedelta(minutes=m), m) for m in (50, 45, 5, 1)]
    with history_app.app_context():
        first = tutor_times.import_activities(rows, source_key="file-a")
        again = tutor_times.import_activities(list(reversed(rows)), source_key="file-a")
        other = tutor_times.import_activities(rows[:1], source_key="file-b")
    assert (first.imported, first.skipped_total) == (4, 0)
    assert (again.imported, again.skipped[DUPLICATE]) == (0, 4)
    assert other.imported == 1  # another source is other activities
    assert len(stored(history_app, tutor_times.SessionActivity)) == 5


def test_rows_are_skipped_and_counted_by_reason(history_app: Flask, clock: Clock) -> None:
    t = T0 - timedelta(hours=1)
    rows: list[dict[str, Any] | Rejected] = [
        row(K, t, 1),
        {**row(K, t, 2), "ip_address": "not an address"},
        {**row(K, t, 3), "created_at": t.replace(tzinfo=None)},
        {**row(K, t, 4), "created_at": T0 + timedelta(hours=1)},  # the future
        row(K, t, 5, action="delete-everything"),
        row((3, 999, "10.0.0.1"), t, 6),
        row((999, 1, "10.0.0.1"), t, 7),
        row(K, t, 1),  # the same source line twice in one batch
        Rejected(MALFORMED, "garbage"),
    ]
    with history_app.app_context():
        report = tutor_times.import_activities(rows, source_key="mixed", batch_size=4)
    assert report.read == 9 and report.imported == 1
    assert dict(report.skipped) == {
        MALFORMED: 4,
        NOT_ALLOWED: 1,
        UNKNOWN_UNIT: 1,
        UNKNOWN_USER: 1,
        DUPLICATE: 1,
    }
    assert "read 9 rows, imported 1, skipped 8" in report.summary()
    assert len(sessions(history_app)) == 1


def test_a_key_repeated_in_a_later_batch_is_stored_once(history_app: Flask, clock: Clock) -> None:
    """A batch is checked against the stored keys while the batch before it is placed, so a
    row whose own key the batch before holds is found when it is placed: counted as a
    duplicate, stored once, and the rest of its batch stored."""
    t = T0 - timedelta(hours=1)
    minutes = [timedelta(minutes=m) for m in range(5)]
    rows = [row(K, t + m, n) for m, n in zip(minutes, (1, 2, 1, 3, 2), strict=True)]
    with history_app.app_context():
        report = tutor_times.import_activities(rows, source_key="repeats", batch_size=2)
    assert (report.read, report.imported, dict(report.skipped)) == (5, 3, {DUPLICATE: 2})
    assert [s[-1] for s in stored_sessions(history_app)] == [3]


def test_stored_rows_after_batches_of_new_ones_are_duplicates(
    history_app: Flask, clock: Clock
) -> None:
    """A batch of new rows lets the import place the next ones without looking their keys
    up first; rows an earlier import stored, later in the file, are still found (when they
    are placed), counted as duplicates and stored once, and the keys are looked up again."""
    t = T0 - timedelta(hours=1)
    rows = [row(K, t + timedelta(minutes=n), n) for n in range(24)]
    with history_app.app_context():
        earlier = tutor_times.import_activities(rows[8:12] + rows[20:], source_key="half")
        report = tutor_times.import_activities(rows, source_key="half", batch_size=4)
    assert earlier.imported == 8
    assert (report.read, report.imported, dict(report.skipped)) == (24, 16, {DUPLICATE: 8})
    assert [s[-1] for s in stored_sessions(history_app)] == [24]


def test_an_in_memory_database_keeps_every_row_of_an_import(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-memory SQLite is one connection that every checkout shares: a batch checked in the
    reading thread while the batch before is written would end the writer's transaction
    when its connection went back (the rows written before it lost, yet counted). There the
    batch is checked where it is placed. The events pin the interleaving that lost rows:
    each check waits for a write to be under way, and each write holds its transaction open
    a moment."""
    writing = threading.Event()
    write = Placer.write

    def slow_write(self: Placer, *args: Any) -> Any:
        written = write(self, *args)
        writing.set()
        time.sleep(0.05)  # the chunk's transaction is open, its rows written
        writing.clear()
        return written

    admissible = Importer._admissible

    def check_while_writing(self: Importer, *args: Any, **kwargs: Any) -> Any:
        writing.wait(0.2)
        return admissible(self, *args, **kwargs)

    monkeypatch.setattr(Placer, "write", slow_write)
    monkeypatch.setattr(Importer, "_admissible", check_while_writing)
    t = T0 - timedelta(days=2)
    rows = [row(K, t + timedelta(hours=n), n) for n in range(40)]
    app = make_app("sqlite", SQLALCHEMY_DATABASE_URI="sqlite://")
    with app.app_context():
        db.create_all(bind_key=None)
        seed()
        report = tutor_times.import_activities(rows, source_key="memory", batch_size=10)
        assert report.imported == 40
        assert sum(s[-1] for s in stored_sessions(app)) == 40


def test_an_import_reports_its_progress_as_metrics(history_app: Flask, clock: Clock) -> None:
    """Each batch adds its rows to tutor_times_import_rows, by outcome, as the import runs."""
    from prometheus_client import REGISTRY

    def value(outcome: str) -> float:
        sample = REGISTRY.get_sample_value("tutor_times_import_rows_total", {"outcome": outcome})
        return sample or 0.0

    outcomes = ("read", "imported", f"skipped_{MALFORMED.replace(' ', '_')}")
    before = {o: value(o) for o in outcomes}
    t = T0 - timedelta(hours=1)
    rows: list[dict[str, Any] | Rejected] = [row(K, t, 1), row(K, t, 2), Rejected(MALFORMED, "x")]
    with history_app.app_context():
        tutor_times.import_activities(rows, source_key="metered", batch_size=2)
    assert {o: value(o) - before[o] for o in outcomes} == {
        "read": 3,
        "imported": 2,
        outcomes[2]: 1,
    }


def test_a_dry_run_counts_and_writes_nothing(history_app: Flask, clock: Clock) -> None:
    rows = [row(K, T0 - timedelta(minutes=m), m) for m in (30, 20)] + [
        row((999, 1, "10.0.0.1"), T0, 9)
    ]
    with history_app.app_context():
        report = tutor_times.import_activities(rows, source_key="dry", dry_run=True)
    assert (report.imported, dict(report.skipped)) == (2, {UNKNOWN_USER: 1})
    assert "would import 2" in report.summary()
    assert sessions(history_app) == []


def test_only_a_recent_latest_session_stays_open(history_app: Flask, clock: Clock) -> None:
    """R6: history that ended long ago is stored closed; a key's latest session whose last
    activity lies within TIMEOUT + MAX_BACKDATE of now stays open, for live tracking to join."""
    clock.set(T0)
    recent = T0 - TIMEOUT + timedelta(minutes=1)  # older than live tracking accepts
    with history_app.app_context():
        tutor_times.import_activities(
            [row(K, T0 - timedelta(days=1), 1), row(K, recent, 2)], source_key="open"
        )
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address=K[2])
    got = sorted((s.start_time, s.end_time) for s in sessions(history_app))
    assert got == [(T0 - timedelta(days=1), T0 - timedelta(days=1)), (recent, None)]


def test_an_import_after_the_open_session_closes_it(history_app: Flask, clock: Clock) -> None:
    """R5: the imported run becomes the key's latest session; the live one ends at its last
    activity, not at the time of the import."""
    with history_app.app_context():
        clock.set(T0)
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address=K[2])
        clock.set(T0 + timedelta(minutes=30))
        tutor_times.import_activities([row(K, T0 + timedelta(minutes=20), 1)], source_key="after")
        clock.set(T0 + timedelta(minutes=31))
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address=K[2])
    got = sorted((s.start_time, s.end_time) for s in sessions(history_app))
    assert got == [(T0, T0), (T0 + timedelta(minutes=20), None)]


# -- the property: any history, in any chunks and order, beside live tracking -----------------

# (key, gap to the previous activity, live?, seconds late when live)
activity = st.tuples(
    st.one_of(st.just(K), st.sampled_from(KEYS)),
    gaps,
    st.booleans(),
    st.sampled_from([0, 0, 1, 30, 60]),
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(activity, min_size=1, max_size=25), st.randoms(use_true_random=False))
@example(
    [(K, timedelta(0), True, 0), (K, TIMEOUT - timedelta(seconds=1), False, 0)], random.Random(0)
)
@example(
    [
        (K, timedelta(0), False, 0),
        (K, TIMEOUT, True, 0),
        (K, TIMEOUT - timedelta(microseconds=1), False, 0),
    ],
    random.Random(1),
)
@pytest.mark.slow
def test_imports_match_the_reference(
    history_app: Flask, clock: Clock, drawn: list[tuple[Any, ...]], rnd: random.Random
) -> None:
    reset_tables(history_app)
    t = T0 - PAST
    timeline: list[tuple[datetime, Any]] = []  # (when it is processed, what)
    imported: list[dict[str, Any]] = []
    stream: list[tuple[Any, ...]] = []
    for n, (key, gap, live, late) in enumerate(drawn):
        t += gap
        stream.append(("act", key, t))
        if live:
            timeline.append((t + timedelta(seconds=late), ("live", key, t)))
        else:
            imported.append(row(key, t, n))
    # each chunk of history is imported, in a random order, at a random moment after its
    # latest activity happened: before, between or after the live activities around it
    rnd.shuffle(imported)
    cut = sorted(
        rnd.sample(range(1, len(imported)), rnd.randint(0, min(3, max(0, len(imported) - 1))))
    )
    chunks = (
        [imported[i:j] for i, j in zip([0, *cut], [*cut, len(imported)], strict=True)]
        if imported
        else []
    )
    for chunk in chunks:
        latest = max(r["created_at"] for r in chunk)
        when = latest + timedelta(seconds=rnd.choice([0, 1, 900, 3600, 86400]))
        timeline.append((when, ("import", chunk)))
    if imported:  # one chunk again, later: nothing is added twice
        timeline.append((t + timedelta(days=1), ("import", imported[: len(imported) // 2 + 1])))
    clock.set(T0 - PAST - timedelta(days=1))
    with history_app.app_context():
        for when, event in sorted(timeline, key=lambda e: e[0]):
            clock.set(max(clock.now, when))
            if event[0] == "live":
                _, (marker, unit, ip), at = event
                tutor_times.record_activity(
                    "assessing", marker_id=marker, unit_id=unit, ip_address=ip, at=at
                )
            else:
                tutor_times.import_activities(
                    event[1], source_key="p", batch_size=rnd.choice([2, 50])
                )
        close_everything(clock)
    assert stored_sessions(history_app) == reference(stream, TIMEOUT)
