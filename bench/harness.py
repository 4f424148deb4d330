"""What the wrk-driven benchmarks share: starting a server process and waiting for it,
and reading the `RESULT key=value ...` line our wrk Lua scripts print."""

import json
import os
import re
import resource
import subprocess
import time
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


def run_wrk(port: int, case: dict[str, str], *, seconds: int, connections: int, delay_ms: float = 0) -> dict:
    """wrk with bench/wrk_origin.lua against `case['path']` (the rest of `case`: the
    script's environment; a key prefix made unique per run); refuses any error answer."""
    env = {key: value for key, value in case.items() if key != "path"}
    if "BENCH_KEY_PREFIX" in env:
        env["BENCH_KEY_PREFIX"] = f"{env['BENCH_KEY_PREFIX']}{time.time_ns()}"
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
               "-s", str(ROOT / "bench/wrk_origin.lua"), f"http://127.0.0.1:{port}{case['path']}"]  # fmt: skip
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(command, env=os.environ | env | {"BENCH_DELAY_MS": f"{delay_ms:.2f}"},
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(
        next(line for line in output.splitlines() if line.startswith("RESULT ")).removeprefix("RESULT ")
    )
    if result["non_2xx"] or result["socket_errors"]:
        raise SystemExit(f"{case['path']}: {result}")
    result["rps"] = result["requests"] / result["seconds"]
    wrk_cpu = (children.ru_utime + children.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    result["wrk_cpu_share"] = wrk_cpu / result["seconds"] / (os.cpu_count() or 1)
    return result
