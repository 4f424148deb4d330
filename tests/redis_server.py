"""A dedicated redis-server (or Redis Cluster) on free loopback ports, for tests that
stop, flush, freeze (SIGSTOP) or kill Redis without touching the stack's shared one."""

import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from redis.crc import key_slot

from tests.live_server import free_port
from tests.replica_support import wait_until


class DedicatedRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="idem-redis-")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir.name, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("dedicated redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a paused server cannot exit
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=1)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP: connections still open, nothing answers. Always resumed."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)


@contextmanager
def dedicated_redis() -> Iterator[DedicatedRedis]:
    server = DedicatedRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server._dir.cleanup()


class DedicatedCluster:
    """A three-master, three-replica Redis Cluster of its own on free loopback ports
    (each node's bus is its port + 10000), for tests that kill or freeze its nodes."""

    NODE_TIMEOUT_MS = 1000

    def __init__(self) -> None:
        self.ports = _free_cluster_ports(6)
        self._dir = tempfile.TemporaryDirectory(prefix="redis-cluster-")
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def seeds(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        for port in self.ports:
            folder = os.path.join(self._dir.name, str(port))
            os.makedirs(folder)
            self.processes[port] = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(self.NODE_TIMEOUT_MS), "--cluster-replica-validity-factor", "0",
                 "--cluster-require-full-coverage", "no", "--dir", folder, "--loglevel", "warning"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        for port in self.ports:
            wait_until(_answers(self.node(port).ping), timeout=10)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        wait_until(_answers(self.healthy), timeout=30)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, decode_responses=True)

    def alive(self, port: int) -> bool:
        return self.processes[port].poll() is None

    def healthy(self) -> bool:
        """Every live node sees cluster_state:ok, three masters, and every live master's
        replica is streaming."""
        masters = 0
        for port in self.ports:
            if not self.alive(port):
                continue
            if self.node(port).cluster("info")["cluster_state"] != "ok":
                return False
            info = self.node(port).info("replication")
            if info["role"] == "master":
                masters += 1
            elif info.get("master_link_status") != "up":
                return False
        return masters == 3

    def master_of(self, key: str) -> int:
        """The port of the live master that owns `key`'s slot, as the cluster says now."""
        slot = key_slot(key.encode())
        for port in self.ports:
            if not self.alive(port):
                continue
            for start, end, master, *_ in self.node(port).execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise RuntimeError("no node answers")

    def replica_of(self, master_port: int) -> int:
        for port in self.ports:
            info = self.node(port).info("replication") if self.alive(port) else {}
            if info.get("role") == "slave" and int(info["master_port"]) == master_port:
                return port
        raise RuntimeError(f"{master_port} has no live replica")

    def kill(self, port: int) -> None:
        self.processes[port].kill()
        self.processes[port].wait(timeout=10)

    @contextmanager
    def paused(self, port: int) -> Iterator[None]:
        os.kill(self.processes[port].pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.processes[port].pid, signal.SIGCONT)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            process.wait(timeout=10)
        self._dir.cleanup()


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_cluster_ports(count: int) -> list[int]:
    """`count` consecutive free ports whose bus ports (+10000) are free too."""
    for _ in range(200):
        base = random.randrange(20000, 30000 - count)
        ports = list(range(base, base + count))
        if all(_port_free(port) and _port_free(port + 10000) for port in ports):
            return ports
    raise RuntimeError("no free ports for a Redis Cluster")


def _answers(condition: Callable[[], object]) -> Callable[[], object]:
    """The condition, false while Redis does not answer yet."""

    def check() -> object:
        try:
            return condition()
        except (redis.RedisError, OSError):
            return False

    return check


@contextmanager
def dedicated_cluster() -> Iterator[DedicatedCluster]:
    cluster = DedicatedCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
