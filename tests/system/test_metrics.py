"""The tests of ``integration/test_metrics.py`` that start servers or processes of their own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from demo.extensions import db, tutor_times

from ..conftest import T0, TASK, Clock, built
from ..integration.test_metrics import BIN, ROOT, TIMEOUT, TOKEN, Gunicorn, samples, scrape
from ..integration.test_metrics import gunicorn as gunicorn  # noqa: F401  (a fixture)
from ..servers import free_port


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


@pytest.mark.system
def test_the_worker_command_serves_its_own_metrics(clock: Clock, tmp_path: Path) -> None:
    """A worker on a machine of its own: `--metrics-port` serves what it closed."""
    from demo.extensions import tutor_times

    from ..conftest import database_url

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
