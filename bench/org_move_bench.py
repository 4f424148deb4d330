"""Benchmark: `org_move` throughput (rows per second of the copy) and its fence time,
for orgs of 10 000 and 100 000 rows by default (BENCH_MOVE_SIZES), moved back and forth between
cluster main and a second real cluster c2 (`bin/stack cluster-up 2`) BENCH_MOVE_ROUNDS
times. Run with `make bench-org-move`.

Baseline, in the same run: the bare COPY of the same org's expense and revenue rows
from main's primary into a scratch table on c2's primary (no snapshot bookkeeping, no
catch-up, no verification), so the ratio is what the move's machinery costs over
moving the bytes. The orgs are idle while they move: the fence is the switch's own
cost (lock, what changed since the last catch-up round, the per-member tables, the
verification of the changes, flip), which should not grow with the org's size
(BENCH_MOVE_SIZES=10000,100000,300000 shows it; docs/benchmarks.md); under load, each
write in flight adds its own duration to it (tests/test_org_move.py measured 0.2-0.4 s
with 4 writers on a loaded machine).
"""

import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ["DB_STATEMENT_TIMEOUT_MS"] = "3600000"


def _second_cluster_env() -> None:
    subprocess.run([str(ROOT / "bin/stack"), "cluster-up", "2"], check=True, capture_output=True, cwd=ROOT)
    out = subprocess.run(
        [str(ROOT / "bin/stack"), "env"], check=True, capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "CLUSTER_COUNT": "2"},
    ).stdout  # fmt: skip
    for line in out.splitlines():
        if line.startswith(("CLUSTER_COUNT=", "CLUSTER2_")):
            key, _, value = line.partition("=")
            os.environ[key] = value


_second_cluster_env()

import django

django.setup()

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from core.bulk_seed import SeedPlan, seed, seeded_org_count
from directory.moves import OrgMove, _conninfo
from directory.selectors import placement_get
from replicas.topology import topology

SIZES = [int(size) for size in os.environ.get("BENCH_MOVE_SIZES", "10000,100000").split(",")]
ROUNDS = int(os.environ.get("BENCH_MOVE_ROUNDS", "6"))
PROPERTIES = 10


def seeded_org(rows: int) -> uuid.UUID:
    prefix = f"bmove{rows}"
    if seeded_org_count(prefix) == 0:
        plan = SeedPlan(orgs=1, properties_per_org=PROPERTIES, users_per_org=1,
                        entries_per_property=rows // PROPERTIES, prefix=prefix, password=os.urandom(8).hex(),
                        batch_orgs=1)  # fmt: skip
        seed(plan, progress=lambda n: None)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT m.org_id FROM tenancy_membership m JOIN accounts_user u ON u.id = m.user_id"
            " WHERE u.username = %s",
            [f"{prefix}-o0-u0"],
        )
        row = cursor.fetchone()
    if row is None:  # a previous run left it on c2: ask the directory by the seeded name
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM accounts_user WHERE username = %s", [f"{prefix}-o0-u0"])
            user_id = cursor.fetchone()[0]
        with psycopg.connect(_conninfo("c2_primary")) as c2:
            row = c2.execute("SELECT org_id FROM tenancy_membership WHERE user_id = %s", [user_id]).fetchone()
            assert row is not None, f"no org of {prefix} on either cluster"
    return uuid.UUID(str(row[0]))


def bare_copy_rows_per_second(org_id: uuid.UUID, source: str, target: str) -> float:
    """COPY the org's entries from one primary into a scratch table on the other."""
    with psycopg.connect(_conninfo(source)) as src, psycopg.connect(_conninfo(target)) as dst:
        dst.execute("CREATE TEMP TABLE bench_copy (LIKE finance_expense)")
        started, rows = time.perf_counter(), 0
        for table in ("finance_expense", "finance_revenue"):
            out = f"COPY (SELECT * FROM {table} WHERE org_id = '{org_id}') TO STDOUT (FORMAT BINARY)"
            with (
                src.cursor().copy(out) as reader,
                dst.cursor().copy("COPY bench_copy FROM STDIN (FORMAT BINARY)") as w,
            ):
                for block in reader:
                    w.write(block)
        counted = dst.execute("SELECT count(*) FROM bench_copy").fetchone()
        assert counted is not None
        rows = counted[0]
        elapsed = time.perf_counter() - started
        dst.rollback()
    return rows / elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    call_command("migrate", database="c2_primary", verbosity=0)
    settings.DIRECTORY_HEARTBEAT_SECONDS = 0.05  # no server processes here: nothing to wait out
    settings.DIRECTORY_STALE_SECONDS = 0.05
    print(f"uptime: {os.getloadavg()}", flush=True)
    for size in SIZES:
        org_id = seeded_org(size)
        rates, fences, bare = [], [], []
        for _ in range(ROUNDS):
            placement = placement_get(org_id=org_id, fresh=True)
            assert placement is not None
            here = placement.cluster
            there = "c2" if here == "main" else "main"
            clusters = topology()
            bare.append(bare_copy_rows_per_second(org_id, clusters.named(here).primary,
                                                  clusters.named(there).primary))  # fmt: skip
            report = OrgMove(org_id=org_id, target=there, progress=lambda line: None).run()
            rows = sum(report.rows_copied.values())
            rates.append(rows / report.copy_seconds)
            fences.append(report.fence_seconds * 1000)
        print(
            f"org of {size} rows ({rows} rows in all tables), {ROUNDS} moves: copy {statistics.median(rates):.0f} rows/s"
            f" (bare COPY {statistics.median(bare):.0f} rows/s, ratio {statistics.median(rates) / statistics.median(bare):.2f});"
            f" fence p50 {pct(fences, 0.5):.0f} ms, p95 {pct(fences, 0.95):.0f} ms, max {max(fences):.0f} ms",
            flush=True,
        )
    print(f"uptime: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
