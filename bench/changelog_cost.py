"""Benchmark: what the org change log costs a keyed write. Run with `make bench-changelog`.

Two gunicorn servers (2 workers each) on the local stack: the real one, and one whose
services skip the counter row and the outbox row but run the same after-commit
handlers (bench/changelog_bypass: the write path before the change log). wrk posts
expenses with a fresh Idempotency-Key each, alternating servers over several rounds,
round-robin over BENCH_ORGS orgs (default 64: a fleet's writes, each org's counter row
rarely contended); BENCH_ORGS=1 is the contention case, every write of one org
serialised on its counter row and its realtime events published out of order by the
request threads (the ordering then costs the log its gap path).
Reports wall-clock figures and the server-side CPU per request (gunicorn + Postgres
primary + Redis + the outbox worker, from /proc), whose difference is the log's cost
(goal: at most 10 %). One real outbox worker runs throughout, as in a deployment: what it
does for the changes it is handed (claim, push fan-out queries, delete) is part of the
log's cost; in the baseline's rounds it only polls. CHANGELOG_QUIET_SECONDS=0 in the
environment turns quiet orgs off (every change of the org then goes to the worker).
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

from bench.harness import run_wrk, start_server
from bench.idempotency import CONNECTIONS, cpu_seconds, expense_body, make_tenants, stack_pids
from tests.live_server import free_port

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
# BENCH_PROFILE=<dir>: after the rounds, py-spy records the first variant's server (CPU
# only) while wrk runs, into <dir>/changelog-cpu.txt; bench/profile_layers.py summarises it.
PROFILE_DIR = os.environ.get("BENCH_PROFILE", "")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
ORGS = int(os.environ.get("BENCH_ORGS", "64"))
VARIANTS = {"with log": "config.settings", "without": "bench.settings_changelog_off"}
CPU_GROUPS = ("server", "worker", "postgres", "redis")  # the order of `measured` below


def main(variants: dict[str, str] = VARIANTS, what: str = "change log", orgs: int = ORGS) -> None:
    """Compare keyed POSTs on servers run with each settings module of `variants`:
    the first is the real write path, the second the baseline without `what`; the
    writes go round-robin over `orgs` orgs."""
    from django.conf import settings

    from changelog.models import OutboxEntry
    from finance.models import Expense
    from finance.totals_repair import org_totals_rebuild

    load_before = os.getloadavg()[0]
    org_ids, case = write_case(orgs)

    def written() -> int:
        return Expense.objects.filter(org_id__in=org_ids).count()

    db = settings.DATABASES["default"]
    database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    servers = {}
    for name, module in variants.items():
        port = free_port()
        env = os.environ | {
            "DATABASE_URL": database_url, "ACCESS_LOG": "", "REST_PORT": str(port), "WEB_CONCURRENCY": "2", "WEB_MAX_REQUESTS": "0",
            "DJANGO_SETTINGS_MODULE": module,
        }  # fmt: skip
        command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
        servers[name] = (start_server(command, env=env, port=port, ready_path="/v1/schema"), port)
    outbox_before = outbox_row_stats()
    worker = start_outbox_worker(database_url)
    results: dict[str, list[dict]] = {name: [] for name in variants}
    measured_name = next(iter(variants))
    try:
        for name, (_, port) in servers.items():  # warm-up, discarded
            run_wrk(port, case | {"BENCH_KEY_PREFIX": f"w{name}"}, seconds=SECONDS, connections=CONNECTIONS)
            time.sleep(1)
        for round_number in range(ROUNDS):
            order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
            for name in order:
                process, port = servers[name]
                measured = [[process.pid], [worker.pid], *stack_pids()]
                before = cpu_seconds(measured)
                rows_before = written()
                result = run_wrk(
                    port,
                    case | {"BENCH_KEY_PREFIX": f"r{round_number}-"},
                    seconds=SECONDS,
                    connections=CONNECTIONS,
                )
                time.sleep(1)  # the requests wrk cut off at its deadline finish (counted, CPU and rows)
                cpu = [after - b for after, b in zip(cpu_seconds(measured), before, strict=True)]
                rows = written() - rows_before
                if abs(rows - result["requests"]) > CONNECTIONS:
                    raise SystemExit(f"{name}: {result}, wrote {rows} rows")
                result["cpu_ms"] = 1000 * sum(cpu) / result["requests"]
                for group, seconds in zip(CPU_GROUPS, cpu, strict=True):
                    result[f"cpu_ms_{group}"] = 1000 * seconds / result["requests"]
                result["throughput"] = result["requests"] / result["seconds"]
                results[name].append(result)
                print(f"round {round_number + 1} {name:>9}: {result['throughput']:6.0f} req/s, "
                      f"p95 {result['p95_ms']:.1f} ms, {result['cpu_ms']:.2f} ms server CPU/request", flush=True)  # fmt: skip
        if PROFILE_DIR:
            profile(servers[measured_name], case)
    finally:
        for process in [worker, *(process for process, _ in servers.values())]:
            process.terminate()
            process.wait(timeout=20)
    leftover = OutboxEntry.objects.filter(org_id__in=org_ids).count()
    # A baseline may skip part of the write (bench/totals_bypass skips the per-day
    # totals): repair the org's read model, so `finance_totals verify` of the dev
    # database (the load test's audit runs it) is not left with the benchmark's gaps.
    for org_id in org_ids:
        org_totals_rebuild(org_id=org_id)
    time.sleep(1)  # table statistics reach pg_stat within a second
    inserted, updated = (after - b for after, b in zip(outbox_row_stats(), outbox_before, strict=True))

    report(results, what, load_before, orgs)
    print(
        f"outbox rows written: {inserted}, handed to the outbox worker: {updated}, left after the run: {leftover}"
    )


def write_case(orgs: int) -> tuple[list[uuid.UUID], dict[str, str]]:
    """`orgs` new orgs with a property each, one manager's token; wrk_origin.lua's case
    that creates an expense in each in turn."""
    tenants, token = make_tenants(orgs)

    case = {
        "path": f"/v1/orgs/{tenants[0][0].id}/expenses", "BENCH_METHOD": "POST", "BENCH_TOKEN": token,
        "BENCH_BODY": expense_body(tenants[0][1].id),
        "BENCH_PATHS": "\n".join(f"/v1/orgs/{org.id}/expenses" for org, _ in tenants),
        "BENCH_BODIES": "\n".join(expense_body(prop.id) for _, prop in tenants),
    }  # fmt: skip
    return [org.id for org, _ in tenants], case


def report(results: dict[str, list[dict]], what: str, load_before: float, orgs: int) -> None:
    measured_name, baseline_name = list(results)
    variants = list(results)

    def median(name: str, field: str) -> float:
        return statistics.median(r[field] for r in results[name])

    print(f"\nload average before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} (2 cores)")
    print(
        f"keyed POST expenses over {orgs} org(s), 2 gunicorn workers each, wrk {CONNECTIONS} connections, "
        f"{ROUNDS} rounds x {SECONDS}s, medians:"
    )
    print(f"{'variant':>9} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'CPU ms/req':>10}")
    for name in variants:
        print(f"{name:>9} {median(name, 'throughput'):7.0f} {median(name, 'p50_ms'):7.2f} "
              f"{median(name, 'p95_ms'):7.2f} {median(name, 'cpu_ms'):10.2f}")  # fmt: skip
    print(f"\nCPU ms per request by process, medians: {'  '.join(f'{g:>8}' for g in CPU_GROUPS)}")
    for name in variants:
        by_group = "  ".join(f"{median(name, 'cpu_ms_' + group):8.2f}" for group in CPU_GROUPS)
        print(f"{name:>38}: {by_group}")
    on, off = median(measured_name, "cpu_ms"), median(baseline_name, "cpu_ms")
    paired = sorted(
        (w["cpu_ms"] - o["cpu_ms"]) / w["cpu_ms"]
        for w, o in zip(results[measured_name], results[baseline_name], strict=True)
    )
    print(f"\n{what} share of a keyed write's server CPU: {100 * (on - off) / on:.1f} % (goal <= 10 %)")
    print(f"  per round (min / median / max): {100 * paired[0]:.1f} / {100 * statistics.median(paired):.1f} / "
          f"{100 * paired[-1]:.1f} %")  # fmt: skip
    ratio = median(measured_name, "throughput") / median(baseline_name, "throughput")
    print(f"wall-clock throughput with / without: {ratio:.3f}")


def start_outbox_worker(database_url: str) -> subprocess.Popen:
    """The real outbox worker, as a deployment runs it next to the servers."""
    env = os.environ | {"DATABASE_URL": database_url}
    return subprocess.Popen(
        [sys.executable, "manage.py", "outbox_worker"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )


def profile(server: tuple[subprocess.Popen, int], case: dict[str, str]) -> None:
    process, port = server
    out = Path(PROFILE_DIR)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "changelog-cpu.txt"
    py_spy = str(Path(sys.executable).parent / "py-spy")
    spy = subprocess.Popen(
        [py_spy, "record", "--pid", str(process.pid), "--subprocesses", "--nonblocking", "--rate", "250",
         "--format", "raw", "--duration", str(SECONDS), "-o", str(target)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    run_wrk(port, case | {"BENCH_KEY_PREFIX": "p"}, seconds=SECONDS, connections=CONNECTIONS)
    spy.wait(timeout=60)
    print(f"profile: {target}", flush=True)


def outbox_row_stats() -> tuple[int, int]:
    """(rows inserted, rows updated) in changelog_outbox so far: the request thread's only
    UPDATE of a row hands it to the worker."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'changelog_outbox'"
        )
        inserted, updated = cursor.fetchone()
    return int(inserted), int(updated)


if __name__ == "__main__":
    main()
