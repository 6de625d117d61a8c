"""The hot path, a session that already exists, costs one Redis round trip and one INSERT
(its own transaction: no separate COMMIT round trip)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from demo.extensions import db, tutor_times

from ..conftest import BACKENDS, TASK, Clock, activities, build, built, cache_of, login, redis_of


class Counter:
    def __init__(self, app: Flask) -> None:
        self.statements: list[str] = []
        self.commits = 0
        self.redis: list[str] = []
        with app.app_context():
            # the host's statements and the tracker's, which has an engine of its own
            self.engines = {db.engine, *tutor_times.tracking_engines}
        self.client = redis_of(app)
        self._execute = self.client.execute_command

    def __enter__(self) -> Counter:
        for engine in self.engines:
            sa.event.listen(engine, "before_cursor_execute", self._on_statement)
            sa.event.listen(engine, "commit", self._on_commit)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.redis.append(str(args[0]))
            return self._execute(*args, **kwargs)

        self.client.execute_command = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for engine in self.engines:
            sa.event.remove(engine, "before_cursor_execute", self._on_statement)
            sa.event.remove(engine, "commit", self._on_commit)
        del self.client.execute_command

    def _on_statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def _on_commit(self, conn: Any) -> None:
        self.commits += 1

    def ours(self) -> list[str]:
        """Statements that touch the extension's tables (the host's own queries aside)."""
        return [s for s in self.statements if "marking_sessions" in s or "session_activities" in s]


@pytest.fixture(params=BACKENDS)
def redis_app(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Flask]:
    yield from build(str(request.param), TUTOR_TIMES_STORE="redis")


def test_record_activity_on_an_open_session(redis_app: Flask, clock: Clock) -> None:
    with redis_app.app_context():
        first = tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.1.1.1")
        clock.advance(minutes=3)
        with Counter(redis_app) as count:
            second = tutor_times.record_activity(
                "assessing", marker_id=3, unit_id=1, ip_address="10.1.1.1", task_id=1
            )
    assert second.marking_session_id == first.marking_session_id
    assert count.redis == ["EVALSHA"]
    assert len(count.statements) == 1 and count.statements[0].lstrip().upper().startswith("INSERT")
    assert count.commits == 0  # autocommit: the INSERT commits itself
    [stored] = [a for a in activities(redis_app) if a.id == second.id]  # durable, and seen
    assert (stored.action, stored.task_id, stored.created_at) == ("assessing", 1, clock())


def test_a_tracked_request_on_an_open_session(redis_app: Flask, clock: Clock) -> None:
    tutor = login(redis_app, "tutor1")
    assert tutor.get("/units/1/inbox").status_code == 200
    clock.advance(minutes=2)
    with Counter(redis_app) as count:
        assert tutor.put(TASK, json={"status": "complete"}).status_code == 200
    assert count.redis == ["EVALSHA"]
    [insert] = count.ours()
    assert insert.lstrip().upper().startswith("INSERT INTO SESSION_ACTIVITIES")


def test_starting_a_session_is_the_slow_path(redis_app: Flask, clock: Clock) -> None:
    """For contrast: a new session needs SQL to decide and Redis to remember."""
    with redis_app.app_context():
        # Each script is loaded into Redis once, by its first use (another key here).
        tutor_times.record_activity("inbox", marker_id=4, unit_id=1, ip_address="10.1.1.9")
        with Counter(redis_app) as count:
            tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.1.1.1")
    assert count.redis == ["EVALSHA", "EVALSHA"]
    assert len(count.ours()) == 3  # find the open session, create one, insert the activity
    assert count.commits == 1


def test_the_sql_store_needs_no_redis(clock: Clock) -> None:
    with built("sqlite", TUTOR_TIMES_STORE="sql") as app:
        assert tutor_times.state_of(app).redis is None
        with app.app_context():
            a = tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.1.1.1")
            clock.advance(minutes=1)
            b = tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.1.1.1")
            assert b.marking_session_id == a.marking_session_id


@pytest.mark.real
def test_on_psycopg_the_insert_goes_straight_to_the_driver(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nobody listening to statement events, the one INSERT skips SQLAlchemy's
    execution layer; it is still the only statement and is committed."""
    import psycopg

    sent: list[str] = []
    execute = psycopg.Connection.execute

    def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(self, query, *args, **kwargs)

    with built("postgres", TUTOR_TIMES_STORE="redis") as app, app.app_context():
        first = tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.1.1.1")
        clock.advance(minutes=1)
        monkeypatch.setattr(psycopg.Connection, "execute", counted)
        second = tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.1.1.1")
        monkeypatch.undo()
        assert second.marking_session_id == first.marking_session_id
        assert len(sent) == 1 and sent[0].lstrip().upper().startswith(
            "INSERT INTO SESSION_ACTIVITIES"
        )
        [stored] = [a for a in activities(app) if a.id == second.id]
        assert (stored.action, stored.created_at) == ("inbox", clock())


def cached_sid(app: Flask, store: Any, key: str) -> int:
    return int(store.client.hget(key, "sid"))


@pytest.mark.parametrize("cached", ["another key's open session", "an id from the future"])
def test_a_wrong_cached_session_is_refused_and_replaced(
    redis_app: Flask, clock: Clock, cached: str
) -> None:
    """After a database restore the cache may name a session that is not this key's: the
    activity still lands in the key's own session, and the cache is put right."""
    with redis_app.app_context():
        store = cache_of(redis_app)
        other = tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.1.1.1")
        mine = tutor_times.record_activity("inbox", marker_id=4, unit_id=1, ip_address="10.1.1.2")
        key = store.key(4, 1, "10.1.1.2")
        wrong = other.marking_session_id if cached.startswith("another") else 10**12
        store.client.hset(key, "sid", wrong)
        clock.advance(minutes=1)
        again = tutor_times.record_activity(
            "assessing", marker_id=4, unit_id=1, ip_address="10.1.1.2"
        )
        assert again.marking_session_id == mine.marking_session_id
        assert cached_sid(redis_app, store, key) == mine.marking_session_id
        clock.advance(minutes=1)
        with Counter(redis_app) as count:
            tutor_times.record_activity("assessing", marker_id=4, unit_id=1, ip_address="10.1.1.2")
        assert len(count.ours()) == 1  # the hot path again
    by_session: dict[int, list[Any]] = {}
    for a in activities(redis_app):
        by_session.setdefault(a.marking_session_id, []).append(a.action)
    assert by_session[other.marking_session_id] == ["inbox"]  # nothing of tutor 4's in it
    assert by_session[mine.marking_session_id] == ["inbox", "assessing", "assessing"]
