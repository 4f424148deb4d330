"""Benchmark: POST /v1/orgs/{org}/expenses without a key, with a fresh key each time,
and replaying existing keys, side by side against one real gunicorn server on the
local stack (bin/stack). Run with `make bench-idempotency`.

wrk drives the load (C, keep-alive, so the client costs little of the 2 cores). The
three scenarios are interleaved over several rounds and each figure is the median
over rounds, so a noisy neighbour on the shared machine hits all three alike.
Besides wall-clock throughput and latency it reports the server-side CPU per request
(gunicorn workers + the stack's Postgres primary + its Redis, from /proc), which a
busy neighbour barely moves, and the throughput that CPU cost allows on 2 free cores.
Checks that the fresh-key run wrote one row per request and the replays none.
"""

import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import django
import httpx

ROOT = Path(__file__).resolve().parent.parent
# One token drives the whole load here: keep the per-token rate limit (and its Redis
# counter, a real cost) without ever reaching it.
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "1000000000")
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.conf import settings

from accounts.models import User
from accounts.tokens import token_issue
from bench.process_cpu import tree_cpu_seconds
from finance.models import Expense
from tenancy.models import Membership, Organization, Property
from tenancy.roles import Role
from tests.live_server import free_port, wait_until_up

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
REPLAY_KEYS = 100
SCENARIOS = ("none", "fresh", "replay")
LABELS = {"none": "no key", "fresh": "fresh key", "replay": "replay"}


logging.getLogger("httpx").setLevel(logging.WARNING)


def make_tenant() -> tuple[Organization, Property, str]:
    suffix = uuid.uuid4().hex[:8]
    user = User.objects.create_user(username=f"bench-{suffix}", password=uuid.uuid4().hex)
    org = Organization.objects.create(name=f"Bench {suffix}")
    Membership.objects.create(org=org, user=user, role=Role.MANAGER)
    prop = Property.objects.create(org=org, name="Bench", currency="EUR", timezone="UTC")
    return org, prop, token_issue(user=user)[1]


def expense_body(property_id: object) -> str:
    """The JSON of a benchmark's expense create in the given property."""
    return json.dumps({"property_id": str(property_id), "amount": "12.50", "currency": "EUR",
                       "category": "bench", "occurred_on": "2026-11-01"})  # fmt: skip


def make_tenants(count: int) -> tuple[list[tuple[Organization, Property]], str]:
    """`count` orgs with one property each, one user a manager of all; that user's token.
    Writes spread over many orgs, as a fleet of hotels makes them, contend on no org's rows."""
    org, prop, token = make_tenant()
    owner = org.memberships.get()
    targets = [(org, prop)]
    for number in range(1, count):
        other = Organization.objects.create(name=f"{org.name} {number}")
        Membership.objects.create(org=other, user_id=owner.user_id, role=Role.MANAGER)
        targets.append(
            (other, Property.objects.create(org=other, name="Bench", currency="EUR", timezone="UTC"))
        )
    return targets, token


def stack_pids() -> list[list[int]]:
    """The local stack's Postgres primary (postmaster) and Redis processes, from
    bin/stack's files: the single node, or with REDIS_CLUSTER_NODES every cluster node."""
    state = dict(line.split("=", 1) for line in (ROOT / ".stack/stack.state").read_text().split())
    postmaster = int((Path(state["PG_ROOT"]) / "primary/postmaster.pid").read_text().split()[0])
    if settings.REDIS_CLUSTER_NODES:
        files = sorted((ROOT / ".stack/redis-cluster").glob("*/redis.pid"))
    else:
        files = [ROOT / ".stack/redis/redis.pid"]
    return [[postmaster], [int(path.read_text().strip()) for path in files]]


def cpu_seconds(groups: list[list[int]]) -> list[float]:
    return [sum(tree_cpu_seconds(pid) for pid in group) for group in groups]


def start_server(database_url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": database_url,
        "ACCESS_LOG": "",
        "REST_PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "WEB_MAX_REQUESTS": "0",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    wait_until_up(base_url, process)
    return process, base_url


def run_wrk(url: str, env: dict[str, str]) -> dict:
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--timeout", "10s",
               "-s", str(ROOT / "bench/idempotency.lua"), url]  # fmt: skip
    run = subprocess.run(command, env=os.environ | env, capture_output=True, text=True, check=True)
    output = run.stdout
    time.sleep(1)  # let the requests wrk cut off at its deadline finish before rows are counted
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    load_before = f"{os.getloadavg()[0]:.2f}"
    org, prop, token = make_tenant()
    body = expense_body(prop.id)
    env = {"BENCH_TOKEN": token, "BENCH_BODY": body, "BENCH_REPLAY_KEYS": str(REPLAY_KEYS)}
    database_url = settings.DATABASES["default"]
    db_url = f"postgres://{database_url['USER']}@{database_url['HOST']}:{database_url['PORT']}/{database_url['NAME']}"
    results: dict[str, list[dict]] = {name: [] for name in SCENARIOS}
    server, base_url = start_server(db_url)
    measured = [[server.pid], *stack_pids()]
    try:
        url = f"{base_url}/v1/orgs/{org.id}/expenses"
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        with httpx.Client(timeout=30) as client:
            for n in range(REPLAY_KEYS):  # the keys the replay scenario repeats
                response = client.post(
                    url, content=body, headers=headers | {"Idempotency-Key": f"replay-{n}"}
                )
                assert response.status_code == 201, response.text
        run_wrk(url, env | {"BENCH_MODE": "none", "BENCH_KEY_PREFIX": "warm"})  # warm-up, discarded
        for round_number in range(ROUNDS):
            for name in SCENARIOS:
                rows_before = Expense.objects.filter(org=org).count()
                prefix = "replay" if name == "replay" else f"r{round_number}-{time.time_ns()}"
                cpu_before = cpu_seconds(measured)
                result = run_wrk(url, env | {"BENCH_MODE": name, "BENCH_KEY_PREFIX": prefix})
                cpu = [
                    after - before for after, before in zip(cpu_seconds(measured), cpu_before, strict=True)
                ]
                result["cpu_ms"] = 1000 * sum(cpu) / result["requests"]
                result["cpu_split"] = "/".join(f"{1000 * part / result['requests']:.2f}" for part in cpu)
                written = Expense.objects.filter(org=org).count() - rows_before
                expected = 0 if name == "replay" else result["requests"]
                # wrk may cut the last in-flight requests at the deadline: allow that many.
                if result["non_2xx"] or result["socket_errors"] or abs(written - expected) > CONNECTIONS:
                    raise SystemExit(f"{name}: {result} wrote {written} rows, expected {expected}")
                result["throughput"] = result["requests"] / result["seconds"]
                results[name].append(result)
                print(
                    f"round {round_number + 1} {LABELS[name]:>9}: {result['throughput']:7.0f} req/s, "
                    f"{result['cpu_ms']:.2f} ms server CPU per request (app/postgres/redis {result['cpu_split']})",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(timeout=20)

    def median(name: str, field: str) -> float:
        return statistics.median(r[field] for r in results[name])

    print(f"\nRedis: {'Redis Cluster (3 masters + 3 replicas)' if settings.REDIS_CLUSTER_NODES else 'one node'};"
          f" load average before/after: {load_before} / {os.getloadavg()[0]:.2f} (2 cores)")  # fmt: skip
    print(f"POST expenses, gunicorn 2 workers x {os.environ.get('WEB_THREADS', '4')} threads, "
          f"wrk {CONNECTIONS} connections, {ROUNDS} rounds x {SECONDS}s, medians:")  # fmt: skip
    print(
        f"{'scenario':>10} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} {'2-core req/s':>13}"
    )
    for name in SCENARIOS:
        print(f"{LABELS[name]:>10} {median(name, 'throughput'):8.0f} {median(name, 'p50_ms'):8.2f} "
              f"{median(name, 'p95_ms'):8.2f} {median(name, 'p99_ms'):8.2f} {median(name, 'cpu_ms'):11.2f} "
              f"{2000 / median(name, 'cpu_ms'):13.0f}")  # fmt: skip
    cpu_base, cpu_fresh, cpu_replay = (median(name, "cpu_ms") for name in SCENARIOS)
    print(f"\nserver CPU per request, fresh key / no key: {cpu_fresh / cpu_base:.3f} "
          f"(CPU-bound throughput cost {100 * (1 - cpu_base / cpu_fresh):.1f} %, goal <= 15 %)")  # fmt: skip
    paired = sorted(f["cpu_ms"] / n["cpu_ms"] for f, n in zip(results["fresh"], results["none"], strict=True))
    print(
        f"  same ratio per round (min / median / max): {paired[0]:.3f} / {statistics.median(paired):.3f} / {paired[-1]:.3f}"
    )
    print(f"server CPU per request, replay / fresh key: {cpu_replay / cpu_fresh:.3f} (goal < 1)")
    base = median("none", "throughput")
    fresh, replay = median("fresh", "throughput"), median("replay", "throughput")
    print(
        f"wall-clock throughput, fresh key / no key: {fresh / base:.3f} (cost {100 * (1 - fresh / base):.1f} %)"
    )
    print(f"wall-clock throughput, replay / fresh key: {replay / fresh:.3f} (goal > 1)")
    print(f"wall-clock throughput, replay / no key:    {replay / base:.3f}")
    print(f"p50 fresh / no key: {median('fresh', 'p50_ms') / median('none', 'p50_ms'):.3f}; "
          f"p50 replay / fresh: {median('replay', 'p50_ms') / median('fresh', 'p50_ms'):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
