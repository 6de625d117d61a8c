"""The tests of ``integration/test_health.py`` that start servers or processes of their own."""

from __future__ import annotations

import pytest

from ..conftest import Clock, built
from ..integration.test_health import URL, worker_pass
from ..integration.test_health import own_redis as own_redis  # noqa: F401  (a fixture)
from ..servers import OwnRedis


@pytest.mark.system
def test_health_fails_while_redis_is_down_and_recovers(
    backend: str, own_redis: OwnRedis, clock: Clock
) -> None:
    with built(backend, TUTOR_TIMES_REDIS_URL=own_redis.url) as app:
        client = app.test_client()
        worker_pass(app)
        clock.advance(seconds=12)
        r = client.get(URL)
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        assert body["status"] == "ok"
        assert [body["checks"][c]["status"] for c in ("database", "redis", "worker")] == [
            "ok",
            "ok",
            "ok",
        ]
        assert body["checks"]["worker"]["age_seconds"] == 12.0
        assert r.headers["Cache-Control"] == "no-store"

        own_redis.stop()
        r = client.get(URL)
        assert r.status_code == 503
        assert r.get_json()["status"] == "fail"
        assert r.get_json()["checks"]["redis"] == {
            "status": "fail",
            "ms": r.get_json()["checks"]["redis"]["ms"],
            "error": "ConnectionError",
        }
        assert r.get_json()["checks"]["database"]["status"] == "ok"

        own_redis.start()
        r = client.get(URL)
        assert r.status_code == 200, r.get_json()
