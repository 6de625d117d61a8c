"""Prometheus metrics scraped over HTTP from a real gunicorn with two workers in multiprocess
mode, after known activity; and who may scrape them."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from demo.extensions import db, tutor_times

from .conftest import PG_URL, REDIS_URL, T0, TASK, Clock, built, login, require_real_services
from .servers import free_port
from .test_deployment import Http

ROOT = Path(__file__).resolve().parent.parent
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


@pytest.mark.real
@pytest.mark.system
def test_metrics_add_up_across_gunicorn_workers_and_commands(gunicorn: Gunicorn) -> None:
    http = gunicorn.start()
    http.login("tutor1")
    for _ in range(20):
        assert http.call("PUT", TASK, {"status": "complete"})[0] == 200
    for _ in range(3):
        assert (
            http.call("POST", "/tutor-times/activities", {"action": "inbox", "unit_id": 1})[0]
            == 201
        )
    # once idle, a sweep in a process of its own closes the session
    time.sleep(2 * TIMEOUT + 0.5)
    assert "closed 1 idle session" in gunicorn.flask("tutor-times", "sweep")

    assert scrape(gunicorn.port, None)[0] == 401
    assert scrape(gunicorn.port, "not-the-token-at-all")[0] == 401
    status, text = scrape(gunicorn.port, TOKEN)
    assert status == 200, text
    got = samples(text)

    def value(name: str, **labels: str) -> float:
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    recorded = "tutor_times_activities_recorded_total"
    assert value(recorded, path="sql", action="assessing") == 1  # the session's first
    assert value(recorded, path="cached", action="assessing") == 19
    assert value(recorded, path="cached", action="inbox") == 3
    assert value(recorded, path="fallback", action="assessing") == 0
    assert value("tutor_times_sessions_opened_total") == 1
    assert value("tutor_times_sessions_closed_total", closer="sweep") == 1
    assert value("tutor_times_sessions_closed_total", closer="next_activity") == 0
    assert value("tutor_times_closing_lag_seconds_count", closer="sweep") == 1
    lag = value("tutor_times_closing_lag_seconds_sum", closer="sweep")
    assert TIMEOUT < lag < 60
    assert value("tutor_times_tracking_seconds_count") == 20
    assert 0 < value("tutor_times_tracking_seconds_sum") < 20
    assert value("tutor_times_redis_breaker_open") == 0
    assert value("tutor_times_redis_breaker_trips_total") == 0
    assert not any(
        name.startswith("tutor_times_tracking_failures") and v for (name, _), v in got.items()
    )
    # both gunicorn workers and the sweep command wrote their values there
    workers = subprocess.run(
        ["pgrep", "-P", str(gunicorn.proc.pid if gunicorn.proc else 0)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert len(workers) == 2
    pids = {
        m.group(1) for f in os.listdir(gunicorn.multiproc) if (m := re.search(r"_(\d+)\.db$", f))
    }
    # samples come from files of several processes: a worker that served requests, and the
    # sweep command (which worker gets a kept-alive connection's requests is gunicorn's call),
    # whose values were folded into the archive files when it ended, its own files removed
    assert set(workers) & pids
    master = str(gunicorn.proc.pid if gunicorn.proc else 0)  # its config imports the metrics
    assert pids <= {*workers, master}
    assert {"counter_archive.db", "histogram_archive.db"} <= set(os.listdir(gunicorn.multiproc))


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


@pytest.mark.system
def test_the_worker_command_serves_its_own_metrics(clock: Clock, tmp_path: Path) -> None:
    """A worker on a machine of its own: `--metrics-port` serves what it closed."""
    from demo.extensions import tutor_times

    from .conftest import database_url

    with built("sqlite", TUTOR_TIMES_STORE="sql") as app:
        with app.app_context():  # idle since T0, long before the worker's (real) now
            tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address="10.1.1.1")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
        env.update(
            DEMO_CONFIG="development",
            DATABASE_URL=database_url("sqlite"),
            TUTOR_TIMES_STORE="sql",
            TUTOR_TIMES_IN_PROCESS_SWEEPER="false",
        )
        command = [str(BIN / "flask"), "--app", "wsgi", "tutor-times", "worker"]
        command += ["--no-listen", "--interval", "0.2", "--metrics-port", str(port)]
        log = tmp_path / "worker.log"
        with open(log, "w") as out:
            worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 30
            closed = 0.0
            while closed < 1:
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                        got = samples(r.read().decode())
                except OSError:
                    continue
                closed = got.get(("tutor_times_sessions_closed_total", (("closer", "sweep"),)), 0)
            assert closed == 1
            lag = got[("tutor_times_closing_lag_seconds_sum", (("closer", "sweep"),))]
            expected = (datetime.now(timezone.utc) - T0).total_seconds() - 900
            assert expected - 60 < lag <= expected
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=15)
        assert "metrics on http://127.0.0.1:" in log.read_text()


@pytest.mark.system
def test_one_shot_commands_leave_a_bounded_number_of_metrics_files(
    tmp_path: Path, clock: Clock
) -> None:
    """Twenty ``flask tutor-times sweep`` processes (four at a time, as overlapping cron
    runs would) on one PROMETHEUS_MULTIPROC_DIR: what they counted is all still scraped,
    from a fixed number of files rather than three more per process."""
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    with built("sqlite") as app:
        ms = tutor_times.MarkingSession
        with app.app_context(), db.engine.begin() as conn:
            for i in range(20):  # idle for years: each closed by whichever sweep comes first
                start = datetime(2020, 1, 1, tzinfo=timezone.utc) + timedelta(hours=i)
                values = {"created_at": start, "updated_at": start}
                key = {"marker_id": 3, "unit_id": 1, "ip_address": f"10.0.1.{i}"}
                conn.execute(sa.insert(ms).values(**key, start_time=start, **values))
                session_id = conn.scalar(sa.select(sa.func.max(ms.id)))
                conn.execute(
                    sa.insert(tutor_times.SessionActivity).values(
                        marking_session_id=session_id, action="inbox", **values
                    )
                )
        env = {
            **os.environ,
            "DEMO_CONFIG": "development",
            "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        }
        env.pop("TUTOR_TIMES_REDIS_URL", None)
        command = [str(BIN / "flask"), "--app", "wsgi", "tutor-times", "sweep"]
        for _ in range(5):
            procs = [
                subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
                for _ in range(4)
            ]
            for proc in procs:
                out, _ = proc.communicate(timeout=120)
                assert proc.returncode == 0, out.decode()

    files = sorted(os.listdir(multiproc))
    assert len(files) <= 3, files
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(multiproc))
    closed = registry.get_sample_value("tutor_times_sessions_closed_total", {"closer": "sweep"})
    assert closed == 20
    lags = registry.get_sample_value("tutor_times_closing_lag_seconds_count", {"closer": "sweep"})
    assert lags == 20
