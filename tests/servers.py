"""Redis servers of a test's own, on their own ports, stopped by their PIDs: one server, or
a cluster of them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import redis
from redis.crc import key_slot

from .conftest import IN_CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        for _ in range(2 * primaries):
            port = free_port()
            self.nodes.append(
                OwnRedis(
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    os.path.join(self.dir, f"nodes-{port}.conf"),
                    # the bus on a port of its own: port + 10000 may not exist or be free
                    "--cluster-port",
                    str(free_port()),
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
