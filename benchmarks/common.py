"""What every benchmark shares: its own PostgreSQL database, the demo app on it, bulk data,
and percentiles. Benchmarks run against the real servers, never the embedded ones."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from tutor_times.store import figures, rollups, tallies

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

DATABASE_URL = os.environ.get(
    "TUTOR_TIMES_BENCH_DATABASE_URL",
    "postgresql+psycopg://postgres@127.0.0.1:5432/tutor_times_bench",
)
REDIS_URL = os.environ.get("TUTOR_TIMES_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def arguments(
    doc: str | None, argv: list[str] | None, *extra: tuple[str, dict[str, Any]]
) -> argparse.Namespace:
    """A benchmark's command line: ``--smoke`` (tiny sizes, to check it runs) and ``extra``
    options as (flag, add_argument keywords)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    return parser.parse_args(argv)


def smoke_url(url: str) -> str:
    """The smoke runs' own database, so a test run never touches the benchmark's data."""
    return url.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1] + "_smoke"


def ensure_database(url: str) -> None:
    """Create the database of ``url`` if it does not exist (PostgreSQL)."""
    target = sa.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            )
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def bench_app(database_url: str, **config: Any) -> Flask:
    """The demo LMS on the benchmark database and the real Redis, with a prefix of its own."""
    from demo import create_app

    config.setdefault("TUTOR_TIMES_REDIS_URL", REDIS_URL)
    config.setdefault("TUTOR_TIMES_REDIS_PREFIX", f"tt-bench-{uuid.uuid4().hex[:10]}")
    config.setdefault("TUTOR_TIMES_IN_PROCESS_SWEEPER", False)
    return create_app("testing", SQLALCHEMY_DATABASE_URI=database_url, **config)


def fresh_schema(app: Flask) -> None:
    """Empty tables, the demo's users and units (the marker ids 1-4, unit 1)."""
    from demo.extensions import db
    from demo.seed import seed

    with app.app_context():
        db.drop_all()
        db.create_all()
        seed()
        db.session.commit()


def forget_redis(app: Flask) -> None:
    from demo.extensions import tutor_times

    client = tutor_times.state_of(app).redis
    prefix = app.config["TUTOR_TIMES_REDIS_PREFIX"]
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def engine_of(app: Flask) -> sa.Engine:
    from demo.extensions import db

    with app.app_context():
        return db.engine


def reports_engine_of(app: Flask) -> sa.Engine:
    """The engine the app's reports read with (a pool of their own on its database)."""
    from demo.extensions import db, tutor_times

    with app.app_context():
        return tutor_times.state.reports_engine(db.engine)


def fill_closed_sessions(
    app: Flask,
    n: int,
    *,
    markers: int = 200,
    units: int = 1,
    activities_per_session: int = 0,
    days: float = 730,
    end: datetime | None = None,
    units_per_tutor: int | None = None,
) -> None:
    """``n`` closed sessions of 20 minutes spread evenly over the ``days`` before ``end``
    (default now), written in SQL at once, each with ``activities_per_session`` activities
    (one in three of them assessing), and their figures (``figures.refresh_all``).

    Each tutor works in every unit, or in ``units_per_tutor`` of them (tutor m in units
    m, m + units/k, ... modulo ``units``), taking them in turn."""
    spread = units if units_per_tutor is None else units_per_tutor
    end = end or datetime.now(timezone.utc)
    engine = engine_of(app)
    with engine.begin() as conn:
        add_staff(conn, markers, units)
        conn.execute(
            sa.text(
                """
                INSERT INTO marking_sessions (marker_id, unit_id, ip_address, start_time,
                    end_time, duration_minutes, created_at, updated_at)
                SELECT 1000 + g % :markers,
                       1 + (g % :markers + (g / :markers) % :spread * (:units / :spread))
                           % :units,
                       '10.' || (g % 250) || '.0.1',
                       s, s + interval '20 minutes', 20, s, s + interval '20 minutes'
                FROM (SELECT g, CAST(:end AS timestamptz)
                          - interval '1 second' * ((:n - g) * (:days * 86400.0 / :n)) AS s
                      FROM generate_series(1, :n) AS g) AS t
                """
            ),
            {
                "n": n,
                "markers": markers,
                "units": units,
                "spread": spread,
                "days": days,
                "end": end,
            },
        )
        if activities_per_session:
            conn.execute(
                sa.text(
                    """
                    INSERT INTO session_activities (marking_session_id, action, project_id,
                        task_id, task_definition_id, created_at, updated_at)
                    SELECT ms.id, CASE WHEN k % 3 = 0 THEN 'assessing' ELSE 'inbox' END,
                           1 + ms.id % 500, 1 + (ms.id * 7 + k) % 5000, 1 + (ms.id + k) % 30,
                           ms.start_time + interval '20 minutes' * k / :last,
                           ms.start_time + interval '20 minutes' * k / :last
                    FROM marking_sessions ms, generate_series(0, :per - 1) AS k
                    WHERE ms.end_time IS NOT NULL
                    """
                ),
                {"per": activities_per_session, "last": max(1, activities_per_session - 1)},
            )
    vacuum(engine)  # statistics first: the figures are read per tutor by index
    with engine.begin() as conn:
        figures.refresh_all(conn, models_of(app))
    # the figures were written by updating every session: indexes as a table loaded with
    # them would have, not twice their size
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("REINDEX TABLE marking_sessions"))
    vacuum(engine)


def models_of(app: Flask) -> Any:
    from demo.extensions import tutor_times

    with app.app_context():
        return tutor_times.models


#: the tasks report's tallies and the summary's months, kept with the sessions
#: (tutor_times/store/tallies.py, tutor_times/store/rollups.py)
TALLIES = (
    tallies.ASSESSED,
    tallies.KEYS,
    tallies.DAYS,
    tallies.MONTHS,
    tallies.TOTALS,
    rollups.MONTHS,
)


def vacuum(engine: sa.Engine, tables: tuple[str, ...] | None = None) -> None:
    """What autovacuum does to a live table: statistics, and the visibility map that lets
    index-only scans skip the heap (the sessions, their activities and their tallies, or
    ``tables``)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables or ("marking_sessions", "session_activities", *TALLIES):
            conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


def add_staff(conn: sa.Connection, markers: int, units: int) -> None:
    """Tutors 1000.. (each tutoring every unit) and units 2..``units`` beside the demo's."""
    conn.execute(
        sa.text(
            "INSERT INTO users (id, username, name, password_hash, is_admin)"
            " SELECT 1000 + g, 'tutor-' || g, 'Tutor ' || g, '-', false"
            " FROM generate_series(0, :markers - 1) AS g ON CONFLICT DO NOTHING"
        ),
        {"markers": markers},
    )
    conn.execute(
        sa.text(
            "INSERT INTO units (id, code, name) SELECT g, 'U' || g, 'Unit ' || g"
            " FROM generate_series(2, :units) AS g ON CONFLICT DO NOTHING"
        ),
        {"units": units},
    )
    conn.execute(
        sa.text(
            "INSERT INTO unit_roles (user_id, unit_id, role)"
            " SELECT 1000 + m, u, 'tutor' FROM generate_series(0, :markers - 1) AS m,"
            " generate_series(1, :units) AS u"
        ),
        {"markers": markers, "units": units},
    )


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50 and p99 in milliseconds, and how many samples."""
    ordered = sorted(samples_ns)
    n = len(ordered)
    return {
        "p50_ms": round(statistics.median(ordered) / 1e6, 3),
        "p99_ms": round(ordered[min(n - 1, int(n * 0.99))] / 1e6, 3),
        "n": n,
    }


def time_calls(call: Callable[[], Any], n: int) -> list[int]:
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return samples


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2, default=str) + "\n")
    return path


@contextmanager
def step(label: str) -> Iterator[None]:
    started = time.perf_counter()
    print(f"  {label} ...", end="", flush=True)
    yield
    print(f" {time.perf_counter() - started:.1f} s", flush=True)
