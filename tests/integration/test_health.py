"""GET <prefix>/health: the database, Redis and the worker's heartbeat, as 200 or 503, with a
real Redis of the test's own stopped and started again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from demo.extensions import tutor_times
from tutor_times.closing.worker import Worker
from tutor_times.web import csv_export
from tutor_times.web.schemas import HealthOut

from ..conftest import Clock, built, login
from ..servers import OwnRedis

URL = "/tutor-times/health"


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis().start()
    try:
        yield server
    finally:
        server.stop()


def worker_pass(app: Flask) -> None:
    Worker(app, tutor_times, listen=False).work(burst=True)


def test_without_redis_it_is_not_used(backend: str, clock: Clock) -> None:
    with built(backend, TUTOR_TIMES_STORE="sql") as app:
        body = app.test_client().get(URL).get_json()
        assert body["checks"]["redis"] == {"status": "not used"}
        # no worker ever ran: shown, and fails nothing by default
        assert body["checks"]["worker"] == {"status": "unknown", "last_heartbeat": None}
        assert body["status"] == "ok"


def test_a_silent_worker_fails_past_the_configured_age(backend: str, clock: Clock) -> None:
    with built(backend, TUTOR_TIMES_HEALTH_MAX_HEARTBEAT_AGE=120) as app:
        client = app.test_client()
        assert client.get(URL).status_code == 503  # no heartbeat yet
        worker_pass(app)
        clock.advance(seconds=120)
        assert client.get(URL).status_code == 200
        clock.advance(seconds=1)
        r = client.get(URL)
        assert r.status_code == 503
        assert r.get_json()["checks"]["worker"]["status"] == "fail"
        worker_pass(app)
        assert client.get(URL).status_code == 200


def test_health_can_be_for_signed_in_users_only(clock: Clock) -> None:
    with built("sqlite", TUTOR_TIMES_HEALTH_PUBLIC=False) as app:
        assert app.test_client().get(URL).status_code == 401
        assert login(app, "tutor1").get(URL).status_code == 200


def test_the_body_is_its_response_model_with_instants_as_the_other_endpoints_write_them(
    backend: str, clock: Clock
) -> None:
    with built(backend) as app:
        client = app.test_client()
        worker_pass(app)
        beat = clock()
        clock.advance(seconds=30)
        body = client.get(URL).get_json()
        worker = body["checks"]["worker"]
        assert worker["last_heartbeat"] == csv_export.instant(beat)  # "…Z", as in /sessions
        assert worker["age_seconds"] == 30.0
        assert body == HealthOut.model_validate(body).model_dump(mode="json", exclude_unset=True)
