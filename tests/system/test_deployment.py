"""The deployment page's block (docs/operations/deployment.md), replayed line by line on this machine: PostgreSQL, Redis,
gunicorn with two workers and the tutor-times worker, then a login, a tracked request and a
report over HTTP. Only the database name, the Redis database and the port are changed."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from ..conftest import PG_URL, REDIS_URL, require_real_services
from ..servers import free_port

pytestmark = [pytest.mark.system]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PAGE = ROOT / "docs" / "operations" / "deployment.md"
DEADLINE_S = 60


def deployment_block() -> list[str]:
    block = PAGE.read_text().split("## Run it", 1)[1].split("```sh\n", 1)[1].split("\n```", 1)[0]
    return block.splitlines()


def substituted(line: str, database: str, redis_db: int, port: int) -> str:
    """The page's line with this test's database, Redis database and port."""
    for old, new in [
        ("@127.0.0.1:5432/lms", f"@127.0.0.1:5432/{database}"),
        ("-U postgres lms", f"-U postgres {database}"),
        ("redis://127.0.0.1:6379/0", f"redis://127.0.0.1:6379/{redis_db}"),
        ("127.0.0.1:8000", f"127.0.0.1:{port}"),
        (".venv/bin/", f"{BIN}/"),
    ]:
        line = line.replace(old, new)
    return line


class Http:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.cookie = ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, str]:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Cookie": self.cookie},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, raw, set_cookie = r.status, r.read(), r.headers.get("Set-Cookie", "")
        except urllib.error.HTTPError as e:
            status, raw, set_cookie = e.code, e.read(), e.headers.get("Set-Cookie", "")
        return status, json.loads(raw) if raw else None, set_cookie

    def login(self, username: str) -> str:
        status, _, set_cookie = self.call(
            "POST", "/login", {"username": username, "password": "password"}
        )
        assert status == 200
        # a Secure cookie is not sent back over plain HTTP by a client; the TLS proxy of a
        # real deployment is what this test leaves out, so it returns the cookie itself
        self.cookie = set_cookie.split(";", 1)[0]
        return set_cookie


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_real_services()
    base = sa.make_url(PG_URL)
    assert (base.host, base.port, base.username) == ("127.0.0.1", 5432, "postgres"), (
        "the deployment page uses postgres@127.0.0.1:5432"
    )
    state: dict[str, Any] = {
        "database": f"{base.database}_deployment_{uuid.uuid4().hex[:8]}",
        "redis_db": 5,
        "port": free_port(),
        "env": {
            **os.environ,
            # the shared Redis: this run's keys under a prefix of its own
            "TUTOR_TIMES_REDIS_PREFIX": f"tt-deploy-{uuid.uuid4().hex[:8]}",
        },
        "background": [],
        "logs": [],
    }
    for name in ("DEMO_CONFIG", "SECRET_KEY", "DATABASE_URL", "TUTOR_TIMES_STORE"):
        state["env"].pop(name, None)
    try:
        yield state
    finally:
        for proc in state["background"]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for log in state["logs"]:
            log.close()
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{state["database"]}" WITH (FORCE)'))
        admin.dispose()
        client = redis.Redis.from_url(REDIS_URL, db=state["redis_db"])
        prefix = state["env"]["TUTOR_TIMES_REDIS_PREFIX"]
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)


def replay(state: dict[str, Any], tmp_path: Path) -> None:
    """Each line as a shell would run it: exports into the environment, commands in order,
    a trailing & in the background (kept by PID)."""
    env = state["env"]
    lines = deployment_block()
    assert lines[0] == "export DEMO_CONFIG=production"
    for raw in lines:
        line = substituted(raw, state["database"], state["redis_db"], state["port"])
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("=", 1)
            env[name] = subprocess.run(
                ["bash", "-c", f"printf %s {value}"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
            continue
        args = shlex.split(line.removesuffix("&"))
        if line.endswith("&"):
            log = open(tmp_path / f"{Path(args[0]).name}.log", "w")
            state["logs"].append(log)
            state["background"].append(
                subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
            continue
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"


@pytest.mark.real
def test_the_deployment_section_works_as_written(
    deployment: dict[str, Any], tmp_path: Path
) -> None:
    replay(deployment, tmp_path)
    env = deployment["env"]
    assert len(env["SECRET_KEY"]) == 64
    gunicorn, worker = deployment["background"]
    http = Http(deployment["port"])

    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert gunicorn.poll() is None, (tmp_path / "gunicorn.log").read_text()
        try:
            if http.call("GET", "/me")[0] == 401:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "gunicorn did not answer"
        time.sleep(0.2)
    workers = subprocess.run(
        ["pgrep", "-P", str(gunicorn.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(workers) == 2

    cookie = http.login("tutor1")
    assert re.search(r"; Secure", cookie) and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    status, task, _ = http.call("PUT", "/units/1/projects/1/tasks/1", {"status": "complete"})
    assert (status, task["status"]) == (200, "complete")

    http.login("convenor")
    status, report, _ = http.call("GET", "/tutor-times/units/1/sessions")
    assert status == 200
    assert report["total"] == 1
    [session] = report["sessions"]
    assert (session["marker_id"], session["active"], session["activities"]) == (
        3,
        True,
        {"assessing": 1},
    )
    # the session's key is in the deployment's Redis, under its prefix
    client = redis.Redis.from_url(env["TUTOR_TIMES_REDIS_URL"])
    assert list(client.scan_iter(match=f"{env['TUTOR_TIMES_REDIS_PREFIX']}:*"))

    assert worker.poll() is None, (tmp_path / "flask.log").read_text()
    for proc in (worker, gunicorn):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert "tutor-times worker stopped" in (tmp_path / "flask.log").read_text()
