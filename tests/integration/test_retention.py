"""TUTOR_TIMES_RETENTION_DAYS: the worker removes (or anonymizes) exactly what is older, once
a day, and two workers never both do it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from demo.extensions import tutor_times
from tutor_times.closing.worker import Worker

from ..conftest import T0, Clock, activities, built, sessions

DAY = timedelta(days=1)
#: (days before T0 the session's only activity lies, its IP address)
AGES = [(45, "10.0.0.1"), (31, "10.0.0.2"), (29, "10.0.0.3"), (2, "10.0.0.4")]


def record_sessions(app: Flask, clock: Clock) -> None:
    """One closed session per AGES row (tutor 3, unit 1), and one still open at T0."""
    with app.app_context():
        for days, ip in AGES:
            clock.set(T0 - days * DAY)
            tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address=ip)
        clock.set(T0)
        tutor_times.close_expired_sessions()
        tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.0.0.9")


def retained() -> dict[str, float]:
    """This process's retention counters."""
    return {
        mode: REGISTRY.get_sample_value("tutor_times_retention_sessions_total", {"mode": mode})
        or 0.0
        for mode in ("delete", "anonymize")
    }


@pytest.fixture
def kept_30_days(backend: str, clock: Clock) -> Iterator[Flask]:
    with built(backend, TUTOR_TIMES_RETENTION_DAYS=30) as app:
        record_sessions(app, clock)
        yield app


def passes_at_once(app: Flask, n: int) -> list[int | None]:
    """``n`` workers' housekeeping at the same moment, each in a thread of its own."""
    barrier = threading.Barrier(n)
    results: list[int | None] = []

    def one() -> None:
        barrier.wait()
        with app.app_context():
            results.append(tutor_times.apply_retention())

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_retention_deletes_exactly_what_is_older(kept_30_days: Flask, clock: Clock) -> None:
    app = kept_30_days
    before = retained()
    Worker(app, tutor_times, listen=False).work(burst=True)
    left = sessions(app)
    assert sorted(s.ip_address for s in left) == ["10.0.0.3", "10.0.0.4", "10.0.0.9"]
    assert {a.marking_session_id for a in activities(app)} == {s.id for s in left}
    assert retained()["delete"] - before["delete"] == 2
    # the same day again: nothing, even for a session that has become older meanwhile
    clock.advance(hours=23)
    Worker(app, tutor_times, listen=False).work(burst=True)
    assert len(sessions(app)) == 3
    clock.advance(hours=1)
    with app.app_context():
        assert tutor_times.apply_retention() == 0  # a day later it runs; 29 + 1 is not older
        clock.advance(hours=23, minutes=59)
        assert tutor_times.apply_retention() is None  # the next run waits for its day
        clock.advance(minutes=1)
        assert tutor_times.apply_retention() == 1
    assert sorted(s.ip_address for s in sessions(app)) == ["10.0.0.4", "10.0.0.9"]


def test_two_workers_at_once_purge_once(kept_30_days: Flask, clock: Clock) -> None:
    results = passes_at_once(kept_30_days, 2)
    assert sorted(results, key=lambda r: r is None) == [2, None]
    assert len(sessions(kept_30_days)) == 3


def test_anonymize_blanks_only_older_addresses(backend: str, clock: Clock) -> None:
    with built(
        backend, TUTOR_TIMES_RETENTION_DAYS=30, TUTOR_TIMES_RETENTION_MODE="anonymize"
    ) as app:
        record_sessions(app, clock)
        n = len(activities(app))
        with app.app_context():
            assert tutor_times.apply_retention() == 2
        assert sorted(s.ip_address for s in sessions(app)) == [
            "",
            "",
            "10.0.0.3",
            "10.0.0.4",
            "10.0.0.9",
        ]
        assert len(activities(app)) == n


def test_without_a_period_nothing_is_removed(backend: str, clock: Clock) -> None:
    with built(backend) as app:
        record_sessions(app, clock)
        Worker(app, tutor_times, listen=False).work(burst=True)
        with app.app_context():
            assert tutor_times.apply_retention() is None
        assert len(sessions(app)) == 5


def test_the_period_is_checked(clock: Clock) -> None:
    from tutor_times.core.errors import ConfigurationError

    for value in (0, -3, 1.5, "30"):
        with pytest.raises(ConfigurationError, match="TUTOR_TIMES_RETENTION_DAYS"):
            with built("sqlite", TUTOR_TIMES_RETENTION_DAYS=value):
                pass
    with pytest.raises(ConfigurationError, match="TUTOR_TIMES_RETENTION_MODE"):
        with built("sqlite", TUTOR_TIMES_RETENTION_MODE="shred"):
            pass
