"""Many processes on loopback: the demo LMS deployed as it would be at scale, loaded by
simulated tutors. Two app instances (gunicorn, four sync workers each, a port each) and two
``flask tutor-times worker`` processes share a PostgreSQL database made for the run and a
Redis (one server or a cluster) of the caller's; an asyncio load generator logs 1,000 tutors
of 200 units in and sends their tracked requests, each through one of the instances, as a
proxy in front of them would (``X-Forwarded-For`` names the tutor's address). Every process
is started here and stopped by its PID; the database is dropped afterwards.

``tests/system/test_many_processes.py`` checks what it stored; ``benchmarks/b7_cluster.py`` runs it
longer for throughput, latency and the cost of each activity in each process.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from werkzeug.security import generate_password_hash

from .servers import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: the simulated tutors' user ids: 1000, 1001, ... (the demo's own users come first)
FIRST_TUTOR = 1000
PASSWORD = "password"


@dataclass(frozen=True)
class Shape:
    """How many of each: app instances (a port each), gunicorn processes per instance,
    worker processes, tutors and units."""

    instances: int = 2
    processes: int = 4
    closers: int = 2
    tutors: int = 1000
    units: int = 200


@dataclass(frozen=True)
class Tutor:
    user_id: int
    unit_id: int
    address: str
    cookie: str = ""


def tutors(shape: Shape) -> list[Tutor]:
    """The shape's tutors, spread evenly over its units, each at an address of their own."""
    return [
        Tutor(FIRST_TUTOR + n, 1 + n % shape.units, f"10.{20 + n // 250}.{n % 250}.{1 + n % 7}")
        for n in range(shape.tutors)
    ]


@dataclass(frozen=True)
class Served:
    """One tracked request as the load generator saw it (status 0: no answer at all)."""

    user_id: int
    status: int
    started: float
    seconds: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a gunicorn master's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def start_gunicorn(
    app: str,
    env: dict[str, str],
    log: Path,
    *,
    workers: int,
    threads: int = 1,
    extra: tuple[str, ...] = (),
) -> tuple[int, subprocess.Popen[bytes]]:
    """gunicorn serving ``app`` (``module:name``, or a call of an app factory with literal
    arguments) from the repository, ``workers`` processes of ``threads`` threads each, on a
    free loopback port; its output in ``log``. The port and the process (its master), not
    yet answering: see :func:`wait_for_app`."""
    port = free_port()
    command = [str(BIN / "gunicorn"), "--workers", str(workers), "--threads", str(threads)]
    command += ["--bind", f"127.0.0.1:{port}", *extra, app]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return port, proc


def wait_for_app(
    port: int, proc: subprocess.Popen[bytes], logs: Callable[[], str], timeout: float = 90
) -> None:
    """Until the demo on ``port`` answers (``GET /me``: 401); fails with ``logs()`` if its
    process exits first or it does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, logs()
        try:
            status, _ = asyncio.run(fetch(port, "GET", "/me", {}))
            if status == 401:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"gunicorn did not answer\n{logs()}"
        time.sleep(0.2)


def stop_gunicorn(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Stop gunicorn by its PID: ``sig`` (SIGTERM: its workers finish their requests;
    SIGQUIT: at once), SIGKILL after 20 s. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


@dataclass
class Fleet:
    """The processes of one run, on a database of their own made from ``base_url``."""

    base_url: str
    redis_url: str
    cluster: bool
    folder: Path
    timeout: float
    backdate: float
    interval: float
    shape: Shape = Shape()
    prefix: str = field(default_factory=lambda: f"tt-fleet-{uuid.uuid4().hex[:8]}")
    ports: list[int] = field(default_factory=list)
    apps: list[subprocess.Popen[bytes]] = field(default_factory=list)
    closers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        base = sa.make_url(self.base_url)
        self.url = base.set(database=f"{base.database}_fleet_{uuid.uuid4().hex[:8]}")
        self.admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        self.engine: sa.Engine | None = None

    @property
    def database_url(self) -> str:
        return self.url.render_as_string(hide_password=False)

    def environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("TUTOR_TIMES_") and key != "PROMETHEUS_MULTIPROC_DIR"
        }
        return env | {
            "FLASK_APP": "wsgi",
            "DEMO_CONFIG": "production",
            "SECRET_KEY": self.secret,
            "DATABASE_URL": self.database_url,
            "TRUSTED_PROXIES": "1",
            "TUTOR_TIMES_REDIS_URL": self.redis_url,
            "TUTOR_TIMES_REDIS_CLUSTER": "true" if self.cluster else "false",
            "TUTOR_TIMES_REDIS_PREFIX": self.prefix,
            "TUTOR_TIMES_SESSION_TIMEOUT": str(self.timeout),
            "TUTOR_TIMES_MAX_BACKDATE": str(self.backdate),
        }

    def start(self) -> Fleet:
        self.secret = secrets.token_hex(32)
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.url.database}"'))
        self.engine = sa.create_engine(self.url)
        try:
            self._schema()
            for _ in range(self.shape.instances):
                self._start_app()
            for _ in range(self.shape.closers):
                self._start_closer()
            for port, app in zip(self.ports, self.apps, strict=True):
                self._wait_for_app(port, app)
            for n in range(self.shape.closers):
                self._wait_for_log(self.folder / f"closer-{n}.log", "worker started")
        except BaseException:
            self.stop()
            raise
        return self

    def _schema(self) -> None:
        """The demo's schema and users, then the shape's units and tutors."""
        from demo import create_app
        from demo.extensions import db
        from demo.seed import seed

        app = create_app("testing", SQLALCHEMY_DATABASE_URI=self.database_url)
        with app.app_context():
            db.create_all(bind_key=None)
            seed()
            db.engine.dispose()
        # one cheap hash for every tutor: logging 1,000 of them in is not what is measured
        digest = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1")
        everyone = tutors(self.shape)
        assert self.engine is not None
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO units (id, code, name) SELECT g, 'U' || g, 'Unit ' || g"
                    " FROM generate_series(2, :units) AS g"
                ),
                {"units": self.shape.units},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, name, password_hash, is_admin)"
                    " VALUES (:id, :name, :name, :digest, false)"
                ),
                [
                    {"id": t.user_id, "name": f"tutor-{t.user_id}", "digest": digest}
                    for t in everyone
                ],
            )
            conn.execute(
                sa.text(
                    "INSERT INTO unit_roles (user_id, unit_id, role) VALUES (:id, :unit, 'tutor')"
                ),
                [{"id": t.user_id, "unit": t.unit_id} for t in everyone],
            )

    def _start_app(self) -> None:
        port, proc = start_gunicorn(
            "wsgi:app",
            self.environment(),
            self.folder / f"app-{len(self.apps)}.log",
            workers=self.shape.processes,
            extra=("--backlog", "2048"),
        )
        self.ports.append(port)
        self.apps.append(proc)

    def _start_closer(self) -> None:
        n = len(self.closers)
        command = [sys.executable, "-m", "flask", "tutor-times", "worker"]
        command += ["--interval", str(self.interval)]
        with open(self.folder / f"closer-{n}.log", "wb") as log:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=self.environment(), stdout=log, stderr=subprocess.STDOUT
            )
        self.closers.append(proc)

    def _wait_for_app(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        wait_for_app(port, proc, self.logs)

    def _wait_for_log(self, log: Path, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while text not in log.read_text():
            assert all(p.poll() is None for p in self.closers), self.logs()
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in self.folder.glob("*.log"))

    def app_processes(self) -> list[int]:
        """The gunicorn workers serving requests (children of the two masters)."""
        return [pid for app in self.apps for pid in children(app.pid)]

    def database_backends(self) -> list[int]:
        """The PostgreSQL server processes connected to the run's database."""
        with self.admin.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :name"),
                {"name": self.url.database},
            )
            return [int(pid) for (pid,) in rows]

    def stop(self) -> list[int]:
        """Stop every process by its PID: the workers with SIGTERM (they finish their pass),
        gunicorn with SIGQUIT (at once: nothing is in flight by then); SIGKILL after 20 s.
        Their exit codes."""
        codes = []
        for procs, sig in ((self.closers, signal.SIGTERM), (self.apps, signal.SIGQUIT)):
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(sig)
        for proc in [*self.closers, *self.apps]:
            try:
                codes.append(proc.wait(timeout=20))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(timeout=10))
        self.closers, self.apps = [], []
        if self.engine is not None:
            self.engine.dispose()
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.url.database}" WITH (FORCE)'))
        self.admin.dispose()
        return codes

    # -- what was stored --------------------------------------------------------------

    def scalar(self, sql: str) -> Any:
        assert self.engine is not None
        with self.engine.connect() as conn:
            return conn.scalar(sa.text(sql))

    def rows(self, sql: str) -> list[Any]:
        assert self.engine is not None
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))

    def open_sessions_per_key(self) -> Counter[tuple[int, int, str]]:
        """How many open sessions each key has (R5: never more than one)."""
        rows = self.rows(
            "SELECT marker_id, unit_id, ip_address, count(*) FROM marking_sessions"
            " WHERE end_time IS NULL GROUP BY marker_id, unit_id, ip_address"
        )
        return Counter({(m, u, ip): int(n) for m, u, ip, n in rows})

    def activities(self) -> list[tuple[tuple[int, int, str], datetime]]:
        """Every stored activity: (its session's key, its time)."""
        rows = self.rows(
            "SELECT s.marker_id, s.unit_id, s.ip_address, a.created_at"
            " FROM session_activities a JOIN marking_sessions s ON s.id = a.marking_session_id"
        )
        return [((m, u, ip), at) for m, u, ip, at in rows]

    def sessions(self) -> list[tuple[Any, ...]]:
        """Every stored session as the reference sessionizer writes one: (key, start, end,
        minutes, activities)."""
        rows = self.rows(
            "SELECT s.marker_id, s.unit_id, s.ip_address, s.start_time, s.end_time,"
            " s.duration_minutes, count(a.id) FROM marking_sessions s"
            " LEFT JOIN session_activities a ON a.marking_session_id = s.id GROUP BY s.id"
        )
        return sorted(((m, u, ip), start, end, n, k) for m, u, ip, start, end, n, k in rows)

    def wait_until_all_closed(self, timeout: float) -> float:
        """Seconds until no session is open (R6), or inf."""
        started = time.monotonic()
        while self.scalar("SELECT count(*) FROM marking_sessions WHERE end_time IS NULL"):
            if time.monotonic() - started > timeout:
                return float("inf")
            time.sleep(0.2)
        return time.monotonic() - started


# -- the load generator ---------------------------------------------------------------


async def fetch(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, str]:
    """One HTTP/1.1 request on a new connection: (status, the response's head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        response = await reader.read()
    finally:
        writer.close()
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return int(head.split(" ", 2)[1]), head


async def log_in(port: int, tutor: Tutor) -> Tutor:
    """The tutor with the session cookie of a login through ``port``."""
    body = f'{{"username": "tutor-{tutor.user_id}", "password": "{PASSWORD}"}}'.encode()
    headers = {"Content-Type": "application/json", "X-Forwarded-For": tutor.address}
    status, head = await fetch(port, "POST", "/login", headers, body)
    assert status == 200, head
    cookie = next(
        line.split(":", 1)[1].split(";", 1)[0].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("set-cookie:") and "session=" in line
    )
    return Tutor(tutor.user_id, tutor.unit_id, tutor.address, cookie)


async def log_everyone_in(ports: list[int], everyone: list[Tutor], clients: int) -> list[Tutor]:
    limit = asyncio.Semaphore(clients)

    async def one(n: int, tutor: Tutor) -> Tutor:
        async with limit:
            return await log_in(ports[n % len(ports)], tutor)

    return list(await asyncio.gather(*(one(n, t) for n, t in enumerate(everyone))))


async def tracked_request(port: int, tutor: Tutor) -> Served:
    headers = {"Cookie": tutor.cookie, "X-Forwarded-For": tutor.address}
    started = time.monotonic()
    try:
        status, _ = await fetch(port, "GET", f"/units/{tutor.unit_id}/inbox", headers)
    except OSError:
        status = 0
    return Served(tutor.user_id, status, started, time.monotonic() - started)


#: the most tracked requests a tutor sends in one sitting, back to back
SITTING = 8


async def load(
    ports: list[int], everyone: list[Tutor], seconds: float, clients: int, seed: int = 7
) -> list[Served]:
    """``clients`` concurrent clients for ``seconds``. Each plays one sitting after another:
    a tutor drawn at random sends 1 to SITTING tracked requests back to back (a session's
    activities, each through an instance drawn at random), and the next sitting is another
    tutor's. Some tutors mark much more than others (the draw favours the first ones), so
    many come back for another sitting after a pause: a new session of the same key."""
    draw = random.Random(seed)
    deadline = time.monotonic() + seconds
    served: list[Served] = []

    async def client() -> None:
        while time.monotonic() < deadline:
            tutor = everyone[int(len(everyone) * draw.random() ** 2)]
            for _ in range(draw.randint(1, SITTING)):
                if time.monotonic() >= deadline:
                    return
                served.append(await tracked_request(draw.choice(ports), tutor))

    await asyncio.gather(*(client() for _ in range(clients)))
    return served


def per_tutor(served: list[Served]) -> Counter[int]:
    """How many tracked requests of each tutor answered 2xx."""
    return Counter(s.user_id for s in served if 200 <= s.status < 300)


def stored_per_tutor(activities: list[tuple[tuple[int, int, str], datetime]]) -> Counter[int]:
    return Counter(key[0] for key, _ in activities)
