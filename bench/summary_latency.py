"""Benchmark: the finance summary's origin latency before and after the per-day totals,
for orgs of 1 000, 100 000 and 1 000 000 rows, and what keeping the totals costs a
write. Run with `make bench-summary` (BENCH_SUMMARY_SIZES=1000,100000 to skip the
largest org).

One gunicorn (bench settings, 2 workers, reads on the primary) answers the real
summary (totals) and bench/summary_rows.py's copy of the old one (aggregates over the
rows), one request at a time straight to the origin (every request a cache miss);
bench/ping is the request path alone. Orgs are seeded once with seed_orgs' COPY
(core.bulk_seed, 10 properties, a year of days) and reused by later runs. Then
bench/changelog_cost.py's keyed-POST comparison runs against a server whose services
skip the totals (bench/totals_bypass).
"""

import logging
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ["DB_STATEMENT_TIMEOUT_MS"] = "3600000"  # one COPY of a million rows; the old summary at that size

import django

django.setup()

from django.db import connection

from accounts.tokens import token_issue
from bench.harness import start_server
from core.bulk_seed import SeedPlan, seed, seeded_org_count
from finance.models import DailyTotal
from tenancy.models import Membership
from tests.live_server import free_port

SIZES = [int(size) for size in os.environ.get("BENCH_SUMMARY_SIZES", "1000,100000,1000000").split(",")]
PROPERTIES = 10


def seeded_org(rows: int) -> tuple[str, str]:
    """(org id, owner token) of the bench org with `rows` entries, seeding it if missing."""
    prefix = f"bsum{rows}"
    if seeded_org_count(prefix) == 0:
        started = time.monotonic()
        plan = SeedPlan(orgs=1, properties_per_org=PROPERTIES, users_per_org=1,
                        entries_per_property=rows // PROPERTIES, prefix=prefix, password=os.urandom(8).hex(),
                        batch_orgs=1)  # fmt: skip
        seed(plan, progress=lambda n: None)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE finance_expense")
            cursor.execute("VACUUM ANALYZE finance_revenue")
            cursor.execute("VACUUM ANALYZE finance_daily_total")
        print(f"seeded an org with {rows} rows in {time.monotonic() - started:.0f} s", flush=True)
    membership = Membership.objects.select_related("user").get(user__username=f"{prefix}-o0-u0")
    _, token = token_issue(user=membership.user)
    return str(membership.org_id), token


def latency_ms(client: httpx.Client, path: str, samples: int) -> list[float]:
    client.get(path).raise_for_status()  # warm-up (connection, plans, caches)
    figures = []
    for _ in range(samples):
        started = time.perf_counter()
        response = client.get(path)
        figures.append(1000 * (time.perf_counter() - started))
        response.raise_for_status()
    return sorted(figures)


def p95(figures: list[float]) -> float:
    return figures[min(len(figures) - 1, round(0.95 * (len(figures) - 1)))]


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    load_before = os.getloadavg()[0]
    orgs = {rows: seeded_org(rows) for rows in SIZES}
    port = free_port()
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "bench.settings", "REST_PORT": str(port), "ACCESS_LOG": "", "WEB_CONCURRENCY": "2", "WEB_MAX_REQUESTS": "0",
        "USE_READ_REPLICAS": "false",
    }  # fmt: skip
    command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
    server = start_server(command, env=env, port=port, ready_path="/bench/ping")
    table = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            ping = latency_ms(client, "/bench/ping", 40)
            print(f"bare request path (bench/ping): p50 {statistics.median(ping):.2f} ms", flush=True)
            for rows, (org_id, token) in orgs.items():
                client.headers["Authorization"] = f"Token {token}"
                after_path = f"/v1/orgs/{org_id}/finance/summary"
                before_path = f"/bench/orgs/{org_id}/finance/summary-rows"
                same = client.get(after_path).json() == client.get(before_path).json()
                after = latency_ms(client, after_path, 40)
                before = latency_ms(client, before_path, 40 if rows <= 100_000 else 8)
                totals_rows = DailyTotal.objects.filter(org_id=org_id).count()
                table.append((rows, totals_rows, before, after, same))
                print(f"{rows:>9} rows ({totals_rows} totals rows): before p50 {statistics.median(before):8.1f} ms, "
                      f"after p50 {statistics.median(after):6.1f} ms, same answer: {same}", flush=True)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=20)

    print(f"\nload average before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} (2 cores, shared)")
    print("summary latency at the origin (gunicorn, 2 workers, one request at a time, reads on the primary):")
    print(f"{'rows':>9} {'totals':>7} {'before p50':>11} {'before p95':>11} {'after p50':>10} {'after p95':>10} "
          f"{'before/after':>12} {'after - ping':>12}")  # fmt: skip
    ping_p50 = statistics.median(ping)
    for rows, totals_rows, before, after, _ in table:
        b50, a50 = statistics.median(before), statistics.median(after)
        print(f"{rows:>9} {totals_rows:>7} {b50:>9.1f}ms {p95(before):>9.1f}ms {a50:>8.1f}ms {p95(after):>8.1f}ms "
              f"{b50 / a50:>11.1f}x {a50 - ping_p50:>10.1f}ms")  # fmt: skip
    print(f"(bench/ping p50 {ping_p50:.2f} ms; 'after - ping' is the summary's own share)\n")

    from bench.changelog_cost import main as write_cost

    write_cost({"totals": "config.settings", "without": "bench.settings_totals_off"}, what="per-day totals")


if __name__ == "__main__":
    main()
