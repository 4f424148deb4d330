"""Start a real varnishd with the shipped VCL (deploy/varnish/) in front of a test
server, on a free loopback port, for tests and benchmarks about the edge cache."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.live_server import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "varnish"


def readable_copy_of_deploy(parent: Path) -> Path:
    """deploy/varnish copied under `parent`, readable by everyone: as root, varnishd and
    varnishtest's varnishd read VCL as Varnish's own users, who may not reach a checkout
    in a private folder (a 0700 `mktemp -d`)."""
    parent.chmod(0o755)
    copy = parent / "varnish"
    shutil.copytree(DEPLOY, copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy


def render_backends(*, rest_port: int, realtime_port: int, purgers: str = "127.0.0.1") -> str:
    """The same substitution bin/stack makes in edge-backends.vcl.in."""
    text = (DEPLOY / "edge-backends.vcl.in").read_text()
    for name, value in {
        "@REST_HOST@": "127.0.0.1",
        "@REST_PORT@": str(rest_port),
        "@REALTIME_HOST@": "127.0.0.1",
        "@REALTIME_PORT@": str(realtime_port),
        "@PURGE_ACL@": f'"{purgers}";',
    }.items():
        text = text.replace(name, value)
    return text


class Varnish:
    """One varnishd; `stop()` and `start()` keep its port, like a restart in production."""

    def __init__(self, *, rest_port: int, realtime_port: int, port: int | None = None) -> None:
        if not shutil.which("varnishd"):
            raise RuntimeError("varnishd is missing: `bin/stack up` installs varnish and varnish-modules")
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="edge-varnish-"))
        self.vcl_dir = readable_copy_of_deploy(self.workdir)
        (self.vcl_dir / "edge-backends.vcl").write_text(
            render_backends(rest_port=rest_port, realtime_port=realtime_port)
        )
        self.name = str(self.workdir / "n")
        self.pid: int | None = None

    def start(self) -> None:
        pid_file = self.workdir / "varnish.pid"
        started = subprocess.run(
            ["varnishd", "-a", f"127.0.0.1:{self.port}", "-f", str(self.vcl_dir / "default.vcl"),
             "-p", f"vcl_path={self.vcl_dir}", "-n", self.name, "-s", "malloc,64m",
             "-P", str(pid_file)],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        if started.returncode != 0:
            raise RuntimeError(
                f"varnishd exited {started.returncode} on port {self.port}: {started.stderr.strip()[-2000:]}"
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                httpx.request("PURGE", self.base_url + "/", headers={"xkey-purge": "warm-up"}, timeout=1)
                self.pid = int(pid_file.read_text())
                return
            except (httpx.TransportError, FileNotFoundError, ValueError):
                time.sleep(0.05)
        raise RuntimeError(f"varnishd did not come up on {self.base_url}")

    def stop(self) -> None:
        if self.pid is None:
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        while True:  # the port must be free before a restart binds it again
            try:
                httpx.get(self.base_url, timeout=0.2)
            except httpx.TransportError:
                break
            time.sleep(0.05)
        self.pid = None

    def counters(self) -> dict[str, int]:
        output = subprocess.run(
            ["varnishstat", "-j", "-n", self.name], check=True, capture_output=True, text=True
        ).stdout
        data = json.loads(output)
        data = data.get("counters", data)
        return {
            name: int(value["value"])
            for name, value in data.items()
            if isinstance(value, dict) and "value" in value
        }

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def running_varnish(
    *, rest_port: int, realtime_port: int | None = None, port: int | None = None
) -> Iterator[Varnish]:
    varnish = Varnish(rest_port=rest_port, realtime_port=realtime_port or free_port(), port=port)
    varnish.start()
    try:
        yield varnish
    finally:
        varnish.cleanup()
