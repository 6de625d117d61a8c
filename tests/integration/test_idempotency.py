"""Retries count once: an Idempotency-Key on POST /activities (and on a host view tracked
with ``idempotency_header=``) stores one activity whatever the number of retries."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from demo.extensions import db, tutor_times

from ..conftest import TASK, Clock, activities, built, login

P = "/tutor-times"
BODY = {"action": "inbox", "unit_id": 1}
TASK3 = "/units/1/projects/1/tasks/3"


def post(client: FlaskClient, key: str | None, body: dict[str, Any] = BODY) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(f"{P}/activities", json=body, headers=headers)


def keys_stored(app: Flask) -> int:
    with app.app_context():
        table = tutor_times.models.IdempotencyKeys
        return int(db.session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def test_a_retry_returns_the_first_answer_and_stores_nothing(app: Flask, clock: Clock) -> None:
    tutor = login(app, "tutor1")
    first = post(tutor, "k-1")
    assert first.status_code == 201, first.get_data(as_text=True)
    clock.advance(seconds=5)
    again = post(tutor, "k-1")
    assert (again.status_code, again.get_data()) == (201, first.get_data())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(activities(app)) == 1
    # another key is another request; no key at all is never deduplicated
    assert post(tutor, "k-2").status_code == 201
    assert post(tutor, None).status_code == 201
    assert post(tutor, None).status_code == 201
    assert len(activities(app)) == 4


def test_an_answer_with_a_key_is_the_documented_reply(app: Flask, clock: Clock) -> None:
    """With or without a key, POST /activities answers the same JSON: ISO times with a Z."""
    tutor = login(app, "tutor1")
    keyed = post(tutor, "k-iso").get_json()
    plain = post(tutor, None).get_json()
    assert keyed.keys() == plain.keys()
    assert keyed["created_at"] == plain["created_at"] == clock().isoformat().replace("+00:00", "Z")


def test_the_same_key_with_another_body_is_refused(app: Flask, clock: Clock) -> None:
    tutor = login(app, "tutor1")
    assert post(tutor, "k").status_code == 201
    other = post(tutor, "k", {"action": "get-submission-details", "unit_id": 1})
    assert other.status_code == 422
    assert other.get_json()["error"]["field"] == "Idempotency-Key"
    # the same JSON in another key order is the same request
    same = tutor.post(
        f"{P}/activities",
        data=json.dumps({"unit_id": 1, "action": "inbox"}),
        content_type="application/json",
        headers={"Idempotency-Key": "k"},
    )
    assert same.status_code == 201
    assert len(activities(app)) == 1


def test_keys_are_per_user(app: Flask, clock: Clock) -> None:
    assert post(login(app, "tutor1"), "shared").status_code == 201
    assert post(login(app, "convenor"), "shared").status_code == 201
    assert sorted(a.source for a in activities(app)) == ["client", "client"]
    assert len({(a.marking_session_id) for a in activities(app)}) == 2


def test_a_failed_first_request_leaves_the_key_free(app: Flask, clock: Clock) -> None:
    tutor = login(app, "tutor1")
    old = {**BODY, "at": (clock.now - timedelta(days=1)).isoformat()}
    assert post(tutor, "k", old).status_code == 400
    assert keys_stored(app) == 0
    assert post(tutor, "k").status_code == 201
    assert len(activities(app)) == 1


def test_a_bad_key_is_a_400(app: Flask, clock: Clock) -> None:
    tutor = login(app, "tutor1")
    r = post(tutor, "x" * 256)
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "Idempotency-Key"
    assert activities(app) == []


def test_sixteen_threads_retrying_one_key_store_one_activity(app: Flask, clock: Clock) -> None:
    clients = [login(app, "tutor1") for _ in range(16)]
    barrier = threading.Barrier(len(clients))
    answers: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def retry(client: FlaskClient) -> None:
        barrier.wait()
        r = post(client, "once")
        for _ in range(20):  # as a client does: "try again" (503), "still in progress" (409)
            if r.status_code not in (409, 503):
                break
            r = post(client, "once")
        with lock:
            answers.append((r.status_code, r.get_data()))

    threads = [threading.Thread(target=retry, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 16
    assert {status for status, _ in answers} == {201}
    assert len({body for _, body in answers}) == 1
    assert len(activities(app)) == 1


def test_keys_expire_after_the_ttl(app: Flask, clock: Clock) -> None:
    tutor = login(app, "tutor1")
    assert post(tutor, "k").status_code == 201
    clock.advance(hours=23)
    assert post(tutor, "k").status_code == 201
    assert len(activities(app)) == 1
    clock.advance(hours=1, seconds=1)
    with app.app_context():
        assert tutor_times.expire_idempotency_keys() == 1
    assert keys_stored(app) == 0
    assert post(tutor, "k").status_code == 201
    assert len(activities(app)) == 2


def test_a_tracked_put_retried_with_its_key_records_once(app: Flask, clock: Clock) -> None:
    tutor = login(app, "tutor1")
    headers = {"Idempotency-Key": "put-1"}
    for status in ("complete", "complete", "complete"):
        r = tutor.put(TASK, json={"status": status}, headers=headers)
        assert r.status_code == 200
    assert [a.action for a in activities(app)] == ["assessing"]
    # another key, or none: another assessment
    assert tutor.put(TASK, json={"status": "complete"}, headers={"Idempotency-Key": "put-2"})
    assert tutor.put(TASK, json={"status": "complete"}).status_code == 200
    assert [a.action for a in activities(app)] == ["assessing"] * 3


def test_a_key_that_cannot_be_claimed_in_time_is_a_503_and_stores_nothing(
    backend: str, clock: Clock
) -> None:
    """The key's row is held by another writer past TUTOR_TIMES_SQL_TIMEOUT (SQLite: the
    database's write lock; PostgreSQL: the unique index's row lock): the client is told to
    try again, nothing is stored, and the retry after the writer is gone does the work."""
    with built(backend, TUTOR_TIMES_SQL_TIMEOUT=0.3) as app:
        tutor = login(app, "tutor1")
        with app.app_context():
            table = tutor_times.models.IdempotencyKeys
            blocker = db.engine.connect()
            blocker.execute(
                sa.insert(table).values(
                    scope="activities", user_id=3, key="held", fingerprint="x", created_at=clock()
                )
            )
            try:
                r = post(tutor, "held")
            finally:
                blocker.rollback()
                blocker.close()
        assert r.status_code == 503, r.get_data(as_text=True)
        assert "try again" in r.get_json()["error"]["message"]
        assert activities(app) == [] and keys_stored(app) == 0
        assert post(tutor, "held").status_code == 201
        assert len(activities(app)) == 1


def test_an_answer_that_cannot_be_kept_still_answers_201(
    backend: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The activity is stored, then keeping its answer for the key fails (a trigger refuses
    the key's UPDATE, as a database failing at that instant would): the client still gets
    its 201 — a 500 would tell it to retry, and a retry once the key is abandoned would
    store the activity twice — and the failure is logged and counted."""
    with built(backend) as app:
        tutor = login(app, "tutor1")
        with app.app_context():
            table = tutor_times.models.IdempotencyKeys.name
        refuse = (
            [
                "CREATE OR REPLACE FUNCTION tt_refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'refused'; END $$",
                f"CREATE TRIGGER tt_refuse BEFORE UPDATE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION tt_refuse()",
            ]
            if backend == "postgres"
            else [
                f"CREATE TRIGGER tt_refuse BEFORE UPDATE ON {table}"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            ]
        )
        with app.app_context(), db.engine.begin() as conn:
            for statement in refuse:
                conn.execute(sa.text(statement))
        try:
            before = tutor_times.failures
            with caplog.at_level(logging.ERROR, logger="tutor_times"):
                r = post(tutor, "kept-not")
            assert r.status_code == 201, r.get_data(as_text=True)
            assert len(activities(app)) == 1
            assert tutor_times.failures == before + 1
            assert "could not keep the answer" in caplog.text
        finally:
            with app.app_context(), db.engine.begin() as conn:
                if backend == "postgres":
                    conn.execute(sa.text(f"DROP TRIGGER IF EXISTS tt_refuse ON {table}"))
                    conn.execute(sa.text("DROP FUNCTION IF EXISTS tt_refuse()"))
                else:
                    conn.execute(sa.text("DROP TRIGGER IF EXISTS tt_refuse"))


def keys_reused() -> float:
    return REGISTRY.get_sample_value("tutor_times_idempotency_keys_reused_total") or 0.0


def test_one_key_on_puts_to_different_tasks_records_each_and_counts_the_misuse(
    app: Flask, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends one Idempotency-Key with PUTs to tasks 1, 2 and 3 changed three
    tasks: a key covers one request target, so the other targets are no retries of the
    first. Each is recorded (and each is deduplicated when retried with the key), and the
    misuse is logged and counted, as POST /activities refuses it with a 422."""
    tutor = login(app, "tutor1")
    headers = {"Idempotency-Key": "one-for-all"}
    tasks = ["/units/1/projects/1/tasks/1", "/units/1/projects/1/tasks/2", TASK3]
    before = keys_reused()
    with caplog.at_level(logging.WARNING, logger="tutor_times"):
        for path in tasks:
            clock.advance(seconds=5)
            assert tutor.put(path, json={"status": "complete"}, headers=headers).status_code == 200
        assert [(a.action, a.task_id) for a in activities(app)] == [
            ("assessing", 1),
            ("assessing", 2),
            ("assessing", 3),
        ]
        assert keys_reused() == before + 2
        assert sum("Idempotency-Key" in r.getMessage() for r in caplog.records) == 2
        # each retried with its key: nothing new
        for path in tasks:
            assert tutor.put(path, json={"status": "complete"}, headers=headers).status_code == 200
    assert len(activities(app)) == 3
    assert keys_reused() == before + 4
    assert "/units/1/projects/1/tasks/2" in caplog.text
