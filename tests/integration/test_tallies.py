"""The tasks report's tallies (store/tallies.py) on PostgreSQL: kept by the triggers whoever writes,
two writers of one task taking turns, and the widest gap a safe bound.

The equality of the tallied tasks report with the raw rows, through every writer, is
tests/integration/test_figures.py's property test; these pin what it cannot reach on purpose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from demo.extensions import db, tutor_times
from tutor_times.reports.scope import Scope
from tutor_times.reports.tasks import tasks
from tutor_times.store import tallies

from ..conftest import T0, build, check_tallies

DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def pg_app() -> Iterator[Flask]:
    yield from build("postgres")


def add_session(conn: sa.Connection, session_id: int, marker: int, start: Any) -> None:
    """An open session of unit 1 with no figures, on an address of its own."""
    conn.execute(
        sa.text(
            "INSERT INTO marking_sessions (id, marker_id, unit_id, ip_address, start_time,"
            " created_at, updated_at) VALUES (:id, :m, 1, '10.0.0.' || :id, :t, :t, :t)"
        ),
        {"id": session_id, "m": marker, "t": start},
    )


def close(conn: sa.Connection, session_id: int, tasks_assessed: list[tuple[int, int]]) -> None:
    """Close a session with its figures, as ``figures.refresh`` writes them."""
    conn.execute(
        sa.text(
            "UPDATE marking_sessions SET end_time = start_time + interval '10 minutes',"
            " duration_minutes = 10, assessments = :n, assessed_definitions = :d,"
            " assessed_tasks = :t WHERE id = :id"
        ),
        {
            "id": session_id,
            "n": len(tasks_assessed),
            "d": [d for d, _ in tasks_assessed],
            "t": [t for _, t in tasks_assessed],
        },
    )


def keys(conn: sa.Connection) -> dict[tuple[int, int, int], tuple[Any, ...]]:
    k = tutor_times.models.AssessedKeys.c
    return {
        (r.definition, r.kind, r.value): (r.first_start, r.last_start, r.widest_gap)
        for r in conn.execute(sa.select(k).where(k.unit_id == 1))
    }


def waiting_for_a_lock(engine: sa.Engine, seconds: float = 10) -> bool:
    """Whether another connection to the database comes to wait for a lock in time."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + seconds
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            if conn.execute(query).scalar():
                return True
            conn.rollback()
            time.sleep(0.02)
    return False


@pytest.fixture
def clean(pg_app: Flask) -> Iterator[sa.Engine]:
    with pg_app.app_context():
        db.session.execute(tutor_times.MarkingSession.__table__.delete())
        db.session.commit()
        yield db.engine
        db.session.execute(tutor_times.MarkingSession.__table__.delete())
        db.session.commit()


def test_two_writers_of_one_task_take_turns(clean: sa.Engine) -> None:
    """One transaction adds a task's latest assessment while another deletes its earliest:
    the second waits for the first's key row, then counts the key again from what the
    first committed (counted from its own older snapshot, it would drop the latest)."""
    engine = clean
    with engine.begin() as conn:
        for n, day in ((1, 0), (2, 2), (3, 5)):
            add_session(conn, n, 3, T0 + day * DAY)
        for n in (1, 2):
            close(conn, n, [(5, 77)])
    first = engine.connect()
    first.begin()
    close(first, 3, [(5, 77)])
    done = threading.Event()
    failed: list[BaseException] = []

    def second() -> None:
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM marking_sessions WHERE id = 1"))
        except BaseException as exc:  # reported to the test below
            failed.append(exc)
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert waiting_for_a_lock(engine), "the second writer did not wait for the first"
    assert not done.is_set()
    first.commit()
    first.close()
    thread.join(10)
    assert not failed
    with engine.connect() as conn:
        assert keys(conn)[5, tallies.TASK, 77] == (T0 + 2 * DAY, T0 + 5 * DAY, 3 * DAY)
        check_tallies(conn, tutor_times.models)


def test_deleting_and_reopening_take_away_what_was_tallied(clean: sa.Engine) -> None:
    """A session deleted (as a host's cascade would) or reopened stops counting: the keys it
    alone held go, the keys it bounded are counted again from what is left."""
    engine = clean
    with engine.begin() as conn:
        for n, day in enumerate((0, 2, 5), start=1):
            add_session(conn, n, 3, T0 + day * DAY)
            close(conn, n, [(5, 77), (5, 70 + n)])
    with engine.begin() as conn:
        assert keys(conn)[5, tallies.TASK, 77] == (T0, T0 + 5 * DAY, 3 * DAY)
        conn.execute(sa.text("DELETE FROM marking_sessions WHERE id = 3"))
        conn.execute(
            sa.text(
                "UPDATE marking_sessions SET end_time = NULL, duration_minutes = NULL WHERE id = 1"
            )
        )
    with engine.connect() as conn:
        found = keys(conn)
        assert found[5, tallies.TASK, 77] == (T0 + 2 * DAY, T0 + 2 * DAY, timedelta(0))
        assert (5, tallies.TASK, 73) not in found
        assert (5, tallies.TASK, 71) not in found  # reopened: counted live, not tallied
        check_tallies(conn, tutor_times.models)


def test_a_task_assessed_on_both_sides_of_a_range_is_not_counted_in_it(
    clean: sa.Engine,
) -> None:
    """The complement: a task first assessed before a range and last after it, with no
    assessment within, is not one of the range's tasks (its gap a minute longer than the
    range); moved a minute either way, the range takes it in."""
    engine = clean
    with engine.begin() as conn:
        add_session(conn, 1, 3, T0)
        close(conn, 1, [(5, 77), (5, 78)])
        add_session(conn, 2, 3, T0 + 70 * DAY)
        close(conn, 2, [(5, 77)])
        add_session(conn, 3, 4, T0 + 30 * DAY)
        close(conn, 3, [(5, 78)])
    with engine.connect() as conn:
        models = tutor_times.models
        for start, end, expected in (
            # the range is [T0 + 1 minute, T0 + 70 days): task 77's gap is 70 days, the
            # range a minute shorter; task 78 is in it
            (T0 + timedelta(minutes=1), T0 + 70 * DAY, (1, 1)),
            (T0, T0 + 70 * DAY, (2, 2)),
            (T0 + timedelta(minutes=1), T0 + 70 * DAY + timedelta(minutes=1), (2, 2)),
        ):
            scope = Scope(start, end, unit_id=1)
            for tallied in (False, True):
                (row,) = tasks(conn, models, scope, min_minutes=1, tallied=tallied)
                assert (row["tasks"], row["markers"]) == expected, (start, end, tallied)


def test_a_truncate_and_lists_that_disagree_leave_nothing_tallied(clean: sa.Engine) -> None:
    """Truncating the sessions empties the tallies; a session whose task list is longer than
    its count (an earlier writer's) is not tallied, and the report counts it from its
    activities either way."""
    engine = clean
    with engine.begin() as conn:
        add_session(conn, 1, 3, T0)
        close(conn, 1, [(5, 77)])
        conn.execute(sa.text("UPDATE marking_sessions SET assessed_tasks = '{77,78}' WHERE id = 1"))
        assert keys(conn) == {}
        close(conn, 1, [(5, 77)])
        assert set(keys(conn)) == {(5, tallies.TASK, 77), (5, tallies.MARKER, 3)}
        conn.execute(sa.text("TRUNCATE marking_sessions CASCADE"))
        m = tutor_times.models
        for table in (m.Assessed, m.AssessedKeys, m.AssessedDays):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
