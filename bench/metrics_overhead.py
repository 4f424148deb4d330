"""Requests/s of a bare endpoint through gunicorn with and without the metrics
middleware, measured side by side in one run (`make bench-metrics`).

Each variant runs the same gunicorn (config/gunicorn.py: 2 workers x 4 threads, access
log off) serving `GET /bench/ping`, loaded by wrk from the same machine. Variants are
interleaved over several rounds so drift on a shared machine hits them alike; the
median round is reported. Afterwards the scraped request count is checked against
what wrk sent, so the fast path is also shown to be a correct one.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live_server import free_port, wait_until_up

VARIANTS = {
    "metrics off (baseline)": "bench.settings_metrics_off",
    "project middleware only": "bench.settings_project_metrics_only",
    "all metrics (as shipped)": "bench.settings_metrics_on",
}
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
DURATION = os.environ.get("BENCH_DURATION", "8s")
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "16")
TOKEN = "bench-metrics-token"


def start_server(settings_module: str, metrics_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": settings_module,
        "REST_PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "WEB_MAX_REQUESTS": "0",
        "ACCESS_LOG": "",
        "LOG_LEVEL": "WARNING",
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process)
    return process, url


def _found(pattern: str, output: str, flags: int = 0) -> re.Match[str]:
    match = re.search(pattern, output, flags)
    if match is None:
        raise SystemExit(f"no {pattern!r} in wrk's output:\n{output}")
    return match


def run_wrk(url: str, duration: str = DURATION) -> dict[str, float]:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration}", "--latency", url + "/bench/ping"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {"rps": float(_found(r"Requests/sec:\s+([\d.]+)", output).group(1))}
    result["requests"] = float(_found(r"(\d+) requests in", output).group(1))
    for pct in ("50", "90", "99"):
        value, unit = _found(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()
        result[f"p{pct}_ms"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return result


def scraped_ping_count(url: str) -> float:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(
        url + "/v1/system/metrics/prometheus", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "api_requests_total" and s.labels.get("route") == "/bench/ping"
    )


def in_process_costs() -> str:
    """CPU microseconds per request by middleware variant (bench/middleware_cost.py)."""
    metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": metrics_dir, "LOG_LEVEL": "WARNING"}
    try:
        return subprocess.run(
            [sys.executable, "-W", "ignore", "bench/middleware_cost.py"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def main() -> None:
    print(f"load average at start: {os.getloadavg()}", flush=True)
    costs = in_process_costs()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    counts = []
    for round_number in range(1, ROUNDS + 1):
        for name, module in VARIANTS.items():
            metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
            process, url = start_server(module, metrics_dir)
            try:
                run_wrk(url, duration="2s")  # warm-up, discarded
                time.sleep(0.5)
                before = scraped_ping_count(url)
                result = run_wrk(url)
                if module == "bench.settings_metrics_on":
                    counts.append((result["requests"], scraped_ping_count(url) - before))
                results[name].append(result)
                print(f"round {round_number} {name:26s} {result['rps']:9.0f} req/s", flush=True)
            finally:
                process.terminate()
                process.wait(timeout=15)
                shutil.rmtree(metrics_dir, ignore_errors=True)

    print(f"load average at end: {os.getloadavg()}")
    baseline = statistics.median(r["rps"] for r in results["metrics off (baseline)"])
    print(f"\nwrk -t2 -c{CONNECTIONS} -d{DURATION} GET /bench/ping; gunicorn 2 workers x 4 threads; "
          f"{os.cpu_count()} CPUs; median of {ROUNDS} interleaved rounds")  # fmt: skip
    print(f"{'variant':28s} {'req/s':>9s} {'ratio':>6s} {'p50 ms':>7s} {'p90 ms':>7s} {'p99 ms':>7s}")
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        pcts = [statistics.median(r[f"p{p}_ms"] for r in runs) for p in ("50", "90", "99")]
        print(f"{name:28s} {rps:9.0f} {rps / baseline:6.2f} {pcts[0]:7.2f} {pcts[1]:7.2f} {pcts[2]:7.2f}")
    print(f"\nIn-process CPU cost per request (WSGI handler called directly, multiprocess mode on, "
          f"one process, variants interleaved, median of {ROUNDS}):")  # fmt: skip
    print(costs.rstrip())
    metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
    try:
        ops = subprocess.run(
            [sys.executable, "bench/metric_ops_cost.py"],
            cwd=ROOT,
            env=os.environ | {"PROMETHEUS_MULTIPROC_DIR": metrics_dir},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    print("\nThe middleware's own operations alone (multiprocess mode):")
    print(ops.rstrip())
    for sent, scraped in counts:
        print(
            f"all-metrics run: wrk completed {sent:.0f}, scrape counted {scraped:.0f} (in-flight at stop may add a few)"
        )


if __name__ == "__main__":
    main()
