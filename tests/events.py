"""Random histories played through every writer: live tracking (late activities placed
among closed sessions included), sweeps, an import, a rebuild under another timeout, a
purge. The property tests of the stored figures (test_figures.py) and of the stored
class-time split (test_class_store.py) play theirs with :func:`play`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Flask

from demo.extensions import db, tutor_times

from .conftest import T0, Clock, make_app

#: (marker, unit, address) of each key an event names by its index
KEYS = [(3, 1, "10.0.0.1"), (3, 1, "10.0.0.2"), (4, 1, "10.0.0.1"), (3, 2, "10.0.0.1")]


def record(key: int, at: datetime, action: str) -> None:
    marker, unit, ip = KEYS[key]
    tutor_times.record_activity(action, marker_id=marker, unit_id=unit, ip_address=ip, at=at)


def play(
    app: Flask,
    clock: Clock,
    events: list[tuple[Any, ...]],
    *,
    since: datetime = T0,
    first: int = 0,
    source: str = "history",
) -> None:
    """``events`` (kind, key index, minutes after the previous event, how late it arrives in
    seconds, action) one after another from ``since``, the clock moved to each: the n-th
    (counted from ``first``) comes its minutes and 7·n seconds after the one before. An
    import's activities are :func:`history` and its source ``source`` and its number, so
    that later events played from a later ``first`` import what earlier ones did not."""
    now = since
    with app.app_context():
        for n, (kind, key, minutes, late, action) in enumerate(events, start=first):
            now += timedelta(minutes=minutes, seconds=7 * n)
            clock.set(now)
            if kind == "act":
                record(key, now - timedelta(seconds=late), action)
            elif kind == "sweep":
                tutor_times.close_expired_sessions(now)
            elif kind == "import":
                tutor_times.import_activities(history(now, n + 1), source_key=f"{source}-{n + 1}")
            elif kind == "rebuild":
                rebuild_with_timeout(app, timedelta(minutes=5))
            else:
                tutor_times.purge(now - timedelta(hours=2))


def history(now: datetime, n: int) -> list[dict[str, Any]]:
    """Older activities of every key, some within the timeout of stored sessions."""
    rows = []
    for i in range(8):
        marker, unit, ip = KEYS[i % len(KEYS)]
        at = now - timedelta(hours=3) + timedelta(minutes=11 * i + n)
        action = "assessing" if i % 3 else "inbox"
        rows.append(
            {
                "marker_id": marker,
                "unit_id": unit,
                "ip_address": ip,
                "action": action,
                "task_id": 7 + i % 2,
                "task_definition_id": 1 + i % 3,
                "created_at": at,
                "import_key": f"{n}-{i}",
            }
        )
    return rows


def rebuild_with_timeout(app: Flask, timeout: timedelta) -> None:
    other = make_app(
        "postgres" if db.engine.dialect.name == "postgresql" else "sqlite",
        TUTOR_TIMES_SESSION_TIMEOUT=timeout.total_seconds(),
        SQLALCHEMY_DATABASE_URI=app.config["SQLALCHEMY_DATABASE_URI"],
    )
    with other.app_context():
        tutor_times.clock = tutor_times.clock  # the test's clock, shared by both apps
        tutor_times.rebuild_sessions()
        tutor_times.dispose()
        db.session.remove()
        db.engine.dispose()
