"""Mixed load on the expense list endpoint, read replicas off then on, in one run.

    make bench-replicas   # BENCH_SECONDS=15 BENCH_ROUNDS=3 BENCH_USERS=16

Each virtual user owns an org and loops: 20 % POST an expense, 80 % GET the first
page of the list. After each POST the user's next GET must contain the new expense,
else it counts as a read-your-writes violation. Both runs use the same real gunicorn
setup (2 workers x 4 threads) on a dedicated database `<dev db>_bench` of the local
stack (its replicas stream it like any other); only USE_READ_REPLICAS differs.
Prints throughput, latency percentiles, the share of reads served by replicas
(X-DB-Read-From) and violations, and the on/off ratios.
"""

import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import environ
import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
# One token drives the whole load here: keep the per-token rate limit (and its Redis
# counter, a real cost) without ever reaching it.
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "1000000000")
sys.path.insert(0, str(ROOT))

SECONDS = float(os.environ.get("BENCH_SECONDS", "15"))
USERS = int(os.environ.get("BENCH_USERS", "16"))
WRITE_SHARE = 0.2
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def bench_urls() -> tuple[str, str]:
    env = environ.Env()
    environ.Env.read_env(ROOT / ".env", overwrite=False)
    primary = env.str("DATABASE_URL")
    replicas = env.list("REPLICA_URLS", default=[])
    if not replicas:
        sys.exit("bench-replicas needs REPLICA_URLS (run bin/stack up)")
    base, name = primary.rsplit("/", 1)
    bench = f"{name}_bench"
    return f"{base}/{bench}", ",".join(f"{r.rsplit('/', 1)[0]}/{bench}" for r in replicas)


def prepare(database_url: str) -> None:
    base, name = database_url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    env = os.environ | {"DATABASE_URL": database_url, "REPLICA_URLS": ""}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )


def seed(database_url: str) -> list[dict[str, str]]:
    """One org, owner, property and token per virtual user, and 200 expenses each."""
    os.environ |= {
        "DATABASE_URL": database_url,
        "REPLICA_URLS": "",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    import django

    django.setup()
    from accounts.models import User
    from accounts.tokens import token_issue
    from finance.models import Expense
    from tenancy.models import Membership, Organization, Property

    users = []
    for n in range(USERS):
        user, _ = User.objects.get_or_create(username=f"bench-replicas-{n}")
        membership = Membership.objects.filter(user=user).select_related("org").first()
        if membership is None:
            org = Organization.objects.create(name=f"Bench hotel {n}")
            Membership.objects.create(org=org, user=user, role="owner")
            prop = Property.objects.create(org=org, name="Main", currency="EUR", timezone="Europe/Paris")
            Expense.objects.bulk_create(
                Expense(org=org, property=prop, amount="10.00", currency="EUR", category="seed",
                        occurred_on="2026-01-01", created_by=user)
                for _ in range(200)
            )  # fmt: skip
        else:
            org = membership.org
            found = Property.objects.filter(org=org).first()
            assert found is not None, f"org {org.id} has no property"
            prop = found
        _, token = token_issue(user=user)
        users.append({"org": str(org.id), "property": str(prop.id), "token": token})
    return users


def wait_replicas(database_url: str, replica_urls: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        target = _lsn(conn, "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
    for url in replica_urls.split(","):
        with psycopg.connect(url, autocommit=True) as conn:
            while _lsn(conn, "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn") < target:
                time.sleep(0.05)


def _lsn(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


class VirtualUser(threading.Thread):
    def __init__(
        self, base_url: str, user: dict[str, str], stop: threading.Event, measure_from: float
    ) -> None:
        super().__init__(daemon=True)
        self.base_url, self.user, self.stop, self.measure_from = base_url, user, stop, measure_from
        self.reads: list[float] = []
        self.writes: list[float] = []
        self.replica_reads = 0
        self.violations = 0
        self.errors = 0
        self.rng = random.Random(user["token"])

    def run(self) -> None:
        path = f"/v1/orgs/{self.user['org']}/expenses"
        body = {"property_id": self.user["property"], "amount": "12.50", "currency": "EUR",
                "category": "bench", "occurred_on": "2026-12-31"}  # fmt: skip
        last_written: str | None = None
        with httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Token {self.user['token']}"}
        ) as client:
            while not self.stop.is_set():
                write = self.rng.random() < WRITE_SHARE
                started = time.perf_counter()
                try:
                    if write:
                        response = client.post(path, json=body, timeout=30)
                        ok = response.status_code == 201
                        if ok:
                            last_written = response.json()["id"]
                    else:
                        response = client.get(path, params={"page_size": 20}, timeout=30)
                        ok = response.status_code == 200
                except httpx.HTTPError:
                    self.errors += 1
                    continue
                elapsed = time.perf_counter() - started
                if not ok:
                    self.errors += 1
                    continue
                if write:
                    if started >= self.measure_from:
                        self.writes.append(elapsed)
                    continue
                if last_written is not None:
                    if last_written not in {e["id"] for e in response.json()["results"]}:
                        self.violations += 1
                    last_written = None
                if started >= self.measure_from:
                    self.reads.append(elapsed)
                    if "replica" in response.headers.get("X-DB-Read-From", ""):
                        self.replica_reads += 1


def run_load(base_url: str, users: list[dict[str, str]]) -> dict[str, Any]:
    stop = threading.Event()
    warmup = 3.0
    measure_from = time.perf_counter() + warmup
    workers = [VirtualUser(base_url, user, stop, measure_from) for user in users]
    for worker in workers:
        worker.start()
    time.sleep(warmup + SECONDS)
    stop.set()
    for worker in workers:
        worker.join()
    reads = sorted(x for w in workers for x in w.reads)
    writes = sorted(x for w in workers for x in w.writes)
    everything = sorted(reads + writes)

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] * 1000 if values else float("nan")

    return {
        "rps": len(everything) / SECONDS,
        "p50": pct(everything, 0.50),
        "p95": pct(everything, 0.95),
        "read_p95": pct(reads, 0.95),
        "write_p95": pct(writes, 0.95),
        "reads": len(reads),
        "writes": len(writes),
        "replica_share": sum(w.replica_reads for w in workers) / max(1, len(reads)),
        "violations": sum(w.violations for w in workers),
        "errors": sum(w.errors for w in workers),
        "mean_read_ms": statistics.fmean(reads) * 1000 if reads else float("nan"),
    }


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one mode together: sums for counts, the median round for rates and latencies."""
    merged = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    for key in ("reads", "writes", "violations", "errors"):
        merged[key] = sum(r[key] for r in runs)
    merged["replica_share"] = sum(r["replica_share"] * r["reads"] for r in runs) / max(1, merged["reads"])
    return merged


def main() -> None:
    from tests.live_server import running_server

    database_url, replica_urls = bench_urls()
    prepare(database_url)
    users = seed(database_url)
    wait_replicas(database_url, replica_urls)
    common = {"REPLICA_URLS": replica_urls, "REPLICA_ROUTING_HEADER": "true", "WEB_CONCURRENCY": "2", "WEB_MAX_REQUESTS": "0",
              "WEB_THREADS": "4", "DB_MIN_CONNECTIONS": "4", "LOG_LEVEL": "WARNING"}  # fmt: skip
    load_before = os.getloadavg()[0]
    # Alternated rounds, so a neighbour's load on this shared machine hits both modes.
    rounds: dict[str, list[dict[str, Any]]] = {"primary only": [], "replicas on": []}
    for _ in range(ROUNDS):
        for label, enabled in (("primary only", "false"), ("replicas on", "true")):
            with running_server(database_url, USE_READ_REPLICAS=enabled, **common) as url:
                rounds[label].append(run_load(url, users))
    results = {label: merge(runs) for label, runs in rounds.items()}
    print(f"\nread replicas benchmark: {USERS} virtual users, {int(WRITE_SHARE * 100)} % writes, "
          f"{ROUNDS} x {SECONDS:.0f} s per mode, gunicorn 2 workers x 4 threads, {os.cpu_count()} cores")  # fmt: skip
    header = f"{'':14} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'read p95':>9} {'write p95':>10} {'reads on replicas':>18} {'RYW violations':>15} {'errors':>7}"
    print(f"load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f}")
    print(header)
    for label, r in results.items():
        print(f"{label:14} {r['rps']:7.0f} {r['p50']:7.1f} {r['p95']:7.1f} {r['read_p95']:9.1f} {r['write_p95']:10.1f} "
              f"{r['replica_share'] * 100:17.1f}% {r['violations']:15d} {r['errors']:7d}")  # fmt: skip
    on, off = results["replicas on"], results["primary only"]
    print(f"ratio on/off: throughput {on['rps'] / off['rps']:.2f}x, p95 {on['p95'] / off['p95']:.2f}x")
    goals = {
        "reads on replicas >= 80 %": on["replica_share"] >= 0.8,
        "zero read-your-writes violations": on["violations"] == 0 and off["violations"] == 0,
        "throughput on >= off": on["rps"] >= off["rps"],
    }
    for goal, met in goals.items():
        print(f"  {'MET ' if met else 'MISSED'} {goal}")


if __name__ == "__main__":
    main()
