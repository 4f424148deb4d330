"""Start the real server processes (gunicorn for WSGI, uvicorn for ASGI) on free
loopback ports, pointed at the test database, for tests about bytes on the wire."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(
    base_url: str, process: subprocess.Popen, timeout: float = 30.0, path: str = "/v1/schema"
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


@contextmanager
def running_server(
    database_url: str, kind: str = "wsgi", ready_path: str = "/v1/schema", **extra_env: str
) -> Iterator[str]:
    """Yield the base URL of a server process (up once `ready_path` answers); stop it afterwards."""
    port = free_port()
    env = os.environ | {"DATABASE_URL": database_url, "ACCESS_LOG": "", **extra_env}
    if kind == "wsgi":
        command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
        env |= {"PORT": str(port), "WEB_CONCURRENCY": extra_env.get("WEB_CONCURRENCY", "1")}
    else:
        command = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port),
                   "--host", "127.0.0.1", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url, process, path=ready_path)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
