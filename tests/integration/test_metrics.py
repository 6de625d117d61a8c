"""Prometheus metrics scraped over HTTP from a real gunicorn with two workers in multiprocess
mode, after known activity; and who may scrape them."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import PG_URL, REDIS_URL, TASK, Clock, built, login, require_real_services
from ..servers import free_port
from ..system.test_deployment import Http

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOKEN = secrets.token_hex(16)
#: the session timeout of the gunicorn under test, in seconds
TIMEOUT = 3
GUNICORN_CONF = """
from tutor_times.core.metrics import process_exited

def child_exit(server, worker):
    process_exited(worker.pid)
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the scrape: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Gunicorn:
    """The demo LMS on a database of its own, under gunicorn with two workers."""

    def __init__(self, tmp_path: Path) -> None:
        base = sa.make_url(PG_URL)
        self.database = f"{base.database}_metrics_{uuid.uuid4().hex[:8]}"
        self.admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        self.port = free_port()
        self.prefix = f"tt-metrics-{uuid.uuid4().hex[:8]}"
        self.multiproc = tmp_path / "prometheus"
        self.multiproc.mkdir()
        (tmp_path / "gunicorn.conf.py").write_text(GUNICORN_CONF)
        self.conf = tmp_path / "gunicorn.conf.py"
        self.log = tmp_path / "gunicorn.log"
        self.env = {
            **os.environ,
            "DEMO_CONFIG": "production",
            "SECRET_KEY": secrets.token_hex(32),
            "DATABASE_URL": base.set(database=self.database).render_as_string(False),
            "TUTOR_TIMES_REDIS_URL": REDIS_URL,
            "TUTOR_TIMES_REDIS_PREFIX": self.prefix,
            "TUTOR_TIMES_METRICS": "true",
            "TUTOR_TIMES_METRICS_TOKEN": TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": str(self.multiproc),
            # a session idle for 3 s (and as long again for late activities) is closed by
            # the next sweep: the test waits for that rather than sweeping as of a later time
            "TUTOR_TIMES_SESSION_TIMEOUT": str(TIMEOUT),
        }
        self.env.pop("TUTOR_TIMES_STORE", None)
        self.proc: subprocess.Popen[bytes] | None = None

    def flask(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "flask"), "--app", "wsgi", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def start(self) -> Http:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.database}"'))
        self.flask("db", "upgrade", "demo@head")
        self.flask("db", "upgrade", "heads")
        self.flask("seed-demo")
        command = [str(BIN / "gunicorn"), "-c", str(self.conf), "--workers", "2"]
        command += ["--bind", f"127.0.0.1:{self.port}", "wsgi:app"]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        http = Http(self.port)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if http.call("GET", "/me")[0] == 401:
                    return http
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not answer"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        self.admin.dispose()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{self.prefix}:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Gunicorn]:
    require_real_services()
    server = Gunicorn(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def scrape(port: int, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/tutor-times/metrics", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_are_off_unless_turned_on(clock: Clock) -> None:
    with built("sqlite") as app:
        r = login(app, "admin").get("/tutor-times/metrics")
        assert r.status_code == 404


def test_metrics_need_the_token_unless_public(clock: Clock) -> None:
    with built("sqlite", TUTOR_TIMES_METRICS=True, TUTOR_TIMES_METRICS_TOKEN=TOKEN) as app:
        client = app.test_client()
        refused = client.get("/tutor-times/metrics")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        ok = client.get("/tutor-times/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert "tutor_times_activities_recorded" in ok.get_data(as_text=True)
    with built("sqlite", TUTOR_TIMES_METRICS=True, TUTOR_TIMES_METRICS_PUBLIC=True) as app:
        assert app.test_client().get("/tutor-times/metrics").status_code == 200


def test_without_the_token_only_staff_may_read_them(clock: Clock) -> None:
    with built("sqlite", TUTOR_TIMES_METRICS=True, TUTOR_TIMES_METRICS_TOKEN=TOKEN) as app:
        assert app.test_client().get("/tutor-times/metrics").status_code == 401
        assert login(app, "convenor").get("/tutor-times/metrics").status_code == 403
        assert login(app, "tutor1").get("/tutor-times/metrics").status_code == 403
        assert login(app, "admin").get("/tutor-times/metrics").status_code == 200  # is_admin
    with built("sqlite", TUTOR_TIMES_METRICS=True) as app:  # no token at all: staff only
        assert app.test_client().get("/tutor-times/metrics").status_code == 401
        assert login(app, "admin").get("/tutor-times/metrics").status_code == 200


def test_a_redis_outage_is_counted_as_a_trip_and_fallbacks(clock: Clock) -> None:
    """In process: the counters move by exactly the outage's activities."""
    port = free_port()  # nothing listens there
    with built("sqlite", TUTOR_TIMES_REDIS_URL=f"redis://127.0.0.1:{port}/0") as app:
        before = samples(scrape_in_process(app))
        tutor = login(app, "tutor1")
        for _ in range(3):
            assert tutor.put(TASK, json={"status": "complete"}).status_code == 200
        after = samples(scrape_in_process(app))

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("tutor_times_redis_breaker_trips_total") == 1
    assert delta("tutor_times_tracking_failures_total", kind="redis") == 1
    assert delta("tutor_times_activities_recorded_total", path="fallback", action="assessing") == 3
    assert after[("tutor_times_redis_breaker_open", ())] == 1


def scrape_in_process(app: Flask) -> str:
    from tutor_times.core import metrics

    return metrics.exposition()[0].decode()
