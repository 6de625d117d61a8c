"""Servers of a test's own, on their own loopback ports, stopped by their PIDs: a Redis, a
Redis Cluster, a PostgreSQL primary and a streaming replica of it. None depends on how the
machine's own servers are configured."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy as sa
from psycopg import sql
from redis.crc import key_slot

from .conftest import IN_CI


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free now: all held at once while they are chosen (one
    at a time, the system may hand the same port out twice)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(n):
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


class OwnRedis:
    def __init__(self, port: int | None = None, *extra_args: str) -> None:
        self.extra_args = list(extra_args)
        binary = shutil.which("redis-server")
        if binary is None:
            if IN_CI:
                pytest.fail("redis-server is not installed", pytrace=False)
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnRedis:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server on port {self.port} exited with {self.proc.returncode}"
                        " before answering (its port taken?)"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


class OwnCluster:
    """A Redis Cluster of a test's own: ``primaries`` primaries with one replica each, on free
    loopback ports, its files in a temporary directory; every server stopped by its PID."""

    def __init__(self, primaries: int = 3) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            if IN_CI:
                pytest.fail("redis-cli is not installed", pytrace=False)
            pytest.skip("redis-cli is not installed")
        self.cli = cli
        self.dir = tempfile.mkdtemp(prefix="tt-cluster-")
        self.nodes: list[OwnRedis] = []
        # every node's port and bus port distinct from all the others'
        ports = free_ports(4 * primaries)
        for port, bus in zip(ports[::2], ports[1::2], strict=True):
            self.nodes.append(
                OwnRedis(
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    os.path.join(self.dir, f"nodes-{port}.conf"),
                    # the bus on a port of its own: port + 10000 may not exist or be free
                    "--cluster-port",
                    str(bus),
                    # a dead primary is replaced within about two seconds
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-replica-validity-factor",
                    "0",
                    "--dir",
                    self.dir,
                )
            )

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> OwnCluster:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_until_ok(replicas=len(self.nodes) // 2)
        except BaseException:
            self.stop()
            raise
        return self

    def node_info(self, node: OwnRedis) -> tuple[str, int]:
        """(cluster_state, how many healthy replicas this node sees), and for a replica only
        once its copy of the primary is in sync (a failover needs it)."""
        client = redis.Redis(port=node.port, socket_connect_timeout=0.5, socket_timeout=1)
        state = str(client.cluster("INFO").get("cluster_state", ""))
        nodes = client.cluster("NODES").values()
        replicas = sum(1 for n in nodes if "slave" in n["flags"] and "fail" not in n["flags"])
        info = client.info("replication")
        if info["role"] == "slave" and info.get("master_link_status") != "up":
            return "syncing", replicas
        return state, replicas

    def wait_until_ok(self, replicas: int, timeout: float = 30) -> None:
        """Every live node says the cluster is ok and sees ``replicas`` healthy replicas."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                infos = [self.node_info(n) for n in self.nodes if n.proc is not None]
                if all(state == "ok" and seen == replicas for state, seen in infos):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ok after {timeout} s")
            time.sleep(0.1)

    def primary_of(self, key: str) -> OwnRedis:
        """The node serving ``key``'s slot now."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            if node.proc is None:
                continue
            client = redis.Redis(port=node.port, socket_connect_timeout=0.5, socket_timeout=1)
            for entry in client.execute_command("CLUSTER SLOTS"):
                start, end, owner = entry[0], entry[1], entry[2]  # owner: [host, port, id]
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(owner[1]))
        raise LookupError(f"no live node knows the slot of {key}")

    def kill(self, node: OwnRedis) -> None:
        """Kill ``node`` at once, by its PID (no shutdown, no handover)."""
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(timeout=10)
        node.proc = None

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


#: settings a hot standby must hold at least as high as its primary, or it refuses to start
STANDBY_MINIMA = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)
#: PostgreSQL's own programs: Debian keeps them off PATH, one folder per major version
POSTGRES_PROGRAMS = ("initdb", "postgres", "pg_basebackup")


def postgres_bindir(major: int | None = None) -> str:
    """The folder of ``initdb``, ``postgres`` and ``pg_basebackup``: of version ``major``, or
    the newest installed; PATH's when they are there. Missing: skipped outside CI, failed in."""

    def version(folder: str) -> int:
        name = os.path.basename(os.path.dirname(folder))
        return int(name) if name.isdigit() else 0

    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        folders.append(os.path.dirname(on_path))
    for folder in folders:
        if major is not None and folder.startswith("/usr/lib/") and version(folder) != major:
            continue
        if all(os.access(os.path.join(folder, p), os.X_OK) for p in POSTGRES_PROGRAMS):
            return folder
    wanted = f"PostgreSQL {major}'s" if major else "PostgreSQL's"
    reason = f"{wanted} {', '.join(POSTGRES_PROGRAMS)} are not installed"
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


class _OwnPostgresServer:
    """A PostgreSQL server of a test's own: its data in a temporary directory, on a free
    loopback port, run as the ``postgres`` user when we are root (the server and initdb
    refuse root), stopped by its PID and removed afterwards."""

    prefix = "tt-postgres-"

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix=self.prefix)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: dict[str, Any] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [os.path.join(self.bindir, program), *args],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            **self.user,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{done.stderr[-2000:]}")

    def _write_config(self, hba: str) -> None:
        """Our own configuration files: the machine's may live elsewhere (Debian: /etc)."""
        for name, text in {
            "postgresql.conf": "",
            "pg_ident.conf": "",
            "pg_hba.conf": hba,
        }.items():
            with open(os.path.join(self.data, name), "w") as out:
                out.write(text)
            if self.user:
                os.chown(os.path.join(self.data, name), self.user["user"], self.user["group"])

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def _serve(self, settings: dict[str, str], ready: Callable[[psycopg.Connection], bool]) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": self.dir,
            "fsync": "off",
            "logging_collector": "off",
            **settings,
        }
        args = [a for key, value in settings.items() for a in ("-c", f"{key}={value}")]
        with open(os.path.join(self.dir, "server.log"), "wb") as log:
            self.proc = subprocess.Popen(
                [
                    os.path.join(self.bindir, "postgres"),
                    "-D",
                    self.data,
                    "-p",
                    str(self.port),
                    *args,
                ],
                cwd=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                **self.user,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                    if ready(conn):
                        return
            except psycopg.OperationalError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(self.dir, "server.log")) as log:
                    raise RuntimeError(
                        f"{type(self).__name__} on port {self.port} did not start:\n"
                        f"{log.read()[-2000:]}"
                    )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: clients are cut off
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnPostgres(_OwnPostgresServer):
    """A primary of a test's own, made by ``initdb``, that accepts loopback replication
    connections (its own pg_hba.conf says so; the machine's server is never touched)."""

    prefix = "tt-primary-"
    HBA = (
        "local all all trust\n"
        "host all all 127.0.0.1/32 trust\n"
        "host replication all 127.0.0.1/32 trust\n"
    )

    def __init__(self) -> None:
        super().__init__(postgres_bindir())

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> OwnPostgres:
        try:
            self._run(
                "initdb",
                "-D", self.data,
                "-U", "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )  # fmt: skip
            self._write_config(self.HBA)
            self._serve(
                {"wal_level": "replica", "max_wal_senders": "4", "shared_buffers": "32MB"},
                lambda conn: True,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def create_database(self, name: str) -> str:
        """A new database ``name`` on this server; its SQLAlchemy URL."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


class OwnReplica(_OwnPostgresServer):
    """A streaming replica of the PostgreSQL at ``primary_url``, made with ``pg_basebackup
    -R`` in a temporary directory (the primary must accept replication connections from
    loopback: an :class:`OwnPostgres` does)."""

    prefix = "tt-replica-"

    def __init__(self, primary_url: str) -> None:
        self.primary = sa.make_url(primary_url)
        with psycopg.connect(self._dsn(self.primary), autocommit=True) as conn:
            version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
            self.minima = {
                name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in STANDBY_MINIMA
            }
        # the replica runs the primary's major version, whatever else is installed
        super().__init__(postgres_bindir(version // 10000))

    @staticmethod
    def _dsn(url: sa.URL, **override: Any) -> str:
        parts = {
            "host": url.host or "127.0.0.1",
            "port": url.port or 5432,
            "user": url.username or "postgres",
            "dbname": url.database or "postgres",
            **override,
        }
        return " ".join(f"{key}={value}" for key, value in parts.items())

    def dsn(self, dbname: str = "postgres") -> str:
        return self._dsn(self.primary, port=self.port, dbname=dbname)

    def url(self) -> str:
        """The primary's URL with the replica's port: the same database, read-only."""
        return self.primary.set(port=self.port).render_as_string(hide_password=False)

    def start(self) -> OwnReplica:
        try:
            self._run(
                "pg_basebackup",
                "-h", self.primary.host or "127.0.0.1",
                "-p", str(self.primary.port or 5432),
                "-U", self.primary.username or "postgres",
                "-D", self.data,
                "-R",  # standby.signal + primary_conninfo: a streaming replica on start
                "-X", "stream",
                "-c", "fast",
                "--no-sync",
            )  # fmt: skip
            self._write_config("local all all trust\nhost all all 127.0.0.1/32 trust\n")
            self._serve(
                {"hot_standby": "on", **self.minima},
                lambda conn: conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,),
            )
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_replay(self, timeout: float = 30) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        with psycopg.connect(self._dsn(self.primary), autocommit=True) as primary:
            target = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn(), autocommit=True) as replica:
            while True:
                row = replica.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
                ).fetchone()
                if row == (True,):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the replica did not replay up to {target}")
                time.sleep(0.05)
