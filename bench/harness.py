"""What the wrk-driven benchmarks share: starting a server process and waiting for it,
and reading the `RESULT key=value ...` line our wrk Lua scripts print."""

import re
import subprocess
from pathlib import Path

from tests.live_server import wait_until_up

ROOT = Path(__file__).resolve().parent.parent


def start_server(
    command: list[str], *, env: dict[str, str], port: int, ready_path: str, cwd: Path = ROOT
) -> subprocess.Popen:
    """Start `command` in `cwd` (output discarded) and return once `ready_path` answers on `port`."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process, path=ready_path)
    except RuntimeError as exc:
        process.kill()
        raise SystemExit(f"{command[2]} did not start on port {port}: {exc}") from None
    return process


def wrk_result(output: str) -> dict[str, float]:
    """The figures of the `RESULT rps=... p50=...` line (bench/wrk_report.lua, wrk_edge.lua)."""
    line = next(line for line in output.splitlines() if line.startswith("RESULT"))
    return {key: float(value) for key, value in re.findall(r"(\w+)=([\d.]+)", line)}
