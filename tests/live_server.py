"""Start the real server processes (gunicorn for WSGI, uvicorn for ASGI) on free
loopback ports, pointed at the test database, for tests about bytes on the wire."""

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


_LOWEST_TEST_PORT = 20000


def _ephemeral_start() -> int:
    """The lowest local port the kernel gives outgoing connections (Linux; else its default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on now, below the kernel's ephemeral range. A port
    the kernel hands out for binding port 0 lies in that range, where any outgoing
    connection (a test's, a server's) may take it as its local port before the server
    meant for it binds (seen: varnishd exiting 255 on a port picked before its origin
    started). Random, not the system's lowest free one, so callers rarely meet."""
    high = _ephemeral_start()
    for _ in range(500):
        port = _LOWEST_TEST_PORT + secrets.randbelow(max(high - _LOWEST_TEST_PORT, 1))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # that range is full: what the kernel gives
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(
    base_url: str, process: subprocess.Popen, timeout: float = 90.0, path: str = "/v1/system/health"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            httpx.get(base_url + path, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {base_url} did not come up in {timeout}s")


@dataclass(frozen=True)
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")


def stop_process(process: subprocess.Popen) -> None:
    """TERM, then KILL after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _redis(extra_env: dict[str, str]) -> dict[str, str]:
    """A test that names a REDIS_URL means that one node, also in the cluster pass."""
    if "REDIS_URL" in extra_env:
        return {"REDIS_CLUSTER_NODES": "", **extra_env}
    return extra_env


@contextmanager
def server_process(
    database_url: str, kind: str = "wsgi", ready_path: str = "/v1/system/health", **extra_env: str
) -> Iterator[LiveServer]:
    """Start one server process (extra_env on top of ours) and yield it once `ready_path`
    answers; stop it after.

    kind="asgi" runs uvicorn exactly as `bin/serve realtime` does in production (one
    worker, so the process is uvicorn itself: tests may SIGSTOP or SIGKILL it).
    Without an explicit REPLICA_URLS the server gets none: the ones in .env name the
    development database, not the test database.
    """
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": database_url,
        "ACCESS_LOG": "",
        "REPLICA_URLS": "",
        **_redis(extra_env),
    }
    if kind == "wsgi":
        command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
        env |= {"REST_PORT": str(port), "WEB_CONCURRENCY": extra_env.get("WEB_CONCURRENCY", "1")}
    else:
        command = ["bin/serve", "realtime"]
        env |= {"REALTIME_PORT": str(port), "REALTIME_WORKERS": "1", "PYTHON": sys.executable}
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    server = LiveServer(url=f"http://127.0.0.1:{port}", process=process)
    try:
        wait_until_up(server.url, process, path=ready_path)
        yield server
    finally:
        stop_process(process)


@contextmanager
def running_server(database_url: str, kind: str = "wsgi", **extra_env: str) -> Iterator[str]:
    """Yield the base URL of a server process; stop it afterwards."""
    with server_process(database_url, kind, **extra_env) as server:
        yield server.url


@contextmanager
def running_servers(
    database_url: str, count: int, kind: str = "asgi", **extra_env: str
) -> Iterator[list[LiveServer]]:
    """Several server processes of one kind, each on its own port, sharing Redis."""
    with ExitStack() as stack:
        yield [stack.enter_context(server_process(database_url, kind, **extra_env)) for _ in range(count)]


@contextmanager
def outbox_worker(database_url: str, **extra_env: str) -> Iterator[subprocess.Popen]:
    """`manage.py outbox_worker` on the test database (as `bin/serve worker` runs it)."""
    env = os.environ | {"DATABASE_URL": database_url, "REPLICA_URLS": "", **_redis(extra_env)}
    command = [sys.executable, "manage.py", "outbox_worker", "--poll", "0.05"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()  # printed once the worker is draining
        assert "outbox worker" in first_line, f"worker did not start: {first_line!r}"
        yield process
    finally:
        stop_process(process)
