"""Benchmark: the project's origin next to a bare DRF service. Run with `make bench-origin`.

Two gunicorn servers of the same shape (2 workers x 4 gthreads, keep-alive) on the local
stack, straight to gunicorn (no Varnish: every read is a cache miss at the origin):

- ours: the real settings, every middleware and guarantee (knox token, membership on
  the primary, per-token rate limit, replicas and positions, idempotency, change log,
  edge headers and purges, metrics);
- bare: bench/bare_drf, a ModelSerializer and generic views over the same table shape,
  no auth, nothing else.

Cases: a keyed create (a fresh Idempotency-Key per request; bare: a plain POST) spread
over BENCH_ORGS orgs (default 64, the token's user a member of all: a realistic load
writes many hotels at once), the same create into one org (the contention case: every
write of an org serialises on its change-counter row, which bare DRF does not have), the
list (20 newest), one entry's detail, and the finance summary (ours only: its goal is
against our list). wrk -t2 -c16 drives each case for BENCH_SECONDS, the two servers in
alternating order over BENCH_ROUNDS rounds; figures are medians over rounds. Besides
wall-clock figures it reports the server CPU per request (gunicorn tree, Postgres
primary + replicas, Redis, from /proc), which a busy neighbour barely moves.

Then, for each of our cases, a paced run at half the measured saturation (wrk's
per-connection delay, calibrated once) for the p95 goal. The load generator's own CPU
share is printed to show it is not the bottleneck.

BENCH_BASELINE=<dir>: a third server, ours from another checkout (e.g. `git worktree add
--detach /tmp/base main`, same migrations), runs each of our cases too, alternating with
the others: a cut's before/after in one run.

BENCH_PROFILE=<dir>: afterwards, py-spy records our server under each case (CPU-only
and with idle/waiting frames) into <dir>/<case>-{cpu,wall}.txt (collapsed stacks), and
bench/profile_layers.py summarises them (docs/performance.md).
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# One token drives the whole load: keep the per-token rate limit (and its Redis
# counter, a real cost) without ever reaching it.
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "1000000000")
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.conf import settings
from django.db import connection

from bench.harness import run_wrk, start_server
from bench.process_cpu import tree_cpu_seconds
from finance.models import Expense
from finance.totals_repair import org_totals_rebuild
from tests.live_server import free_port

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
ORGS = int(os.environ.get("BENCH_ORGS", "64"))
BASELINE = os.environ.get("BENCH_BASELINE", "")
PACED_CONNECTIONS = 8
PROFILE_DIR = os.environ.get("BENCH_PROFILE", "")
PROFILE_SECONDS = int(os.environ.get("BENCH_PROFILE_SECONDS", "8"))
SHAPE = ["--workers", "2", "--threads", "4", "--worker-class", "gthread", "--keep-alive", "5"]
ROWS = 200


def stack_pids() -> list[int]:
    """Postgres postmasters (the primary first, then the replicas: directories `primary`,
    `replica1`, ... sort that way) and Redis of the local stack."""
    state = dict(line.split("=", 1) for line in (ROOT / ".stack/stack.state").read_text().split())
    pg_root = Path(state["PG_ROOT"])
    postmasters = [int((d / "postmaster.pid").read_text().split()[0]) for d in sorted(pg_root.iterdir())
                   if (d / "postmaster.pid").exists()]  # fmt: skip
    return [*postmasters, int((ROOT / ".stack/redis/redis.pid").read_text().strip())]


def prepare() -> dict[str, str]:
    """A tenant with ROWS expenses, the same rows in the bare table, ORGS - 1 more orgs
    the same user is a manager of (one property each); ids for the URLs."""
    from bench.idempotency import expense_body, make_tenants

    tenants, token = make_tenants(ORGS)
    org, prop = tenants[0]
    user_id = org.memberships.get().user_id
    targets = [(o.id, p.id) for o, p in tenants]
    Expense.objects.bulk_create(
        Expense(org=org, property=prop, amount="12.50", currency="EUR", category="laundry",
                occurred_on="2026-01-01", created_by_id=user_id)
        for _ in range(ROWS)
    )  # fmt: skip
    org_totals_rebuild(org_id=org.id)  # bulk_create bypasses the services: the summary's totals
    subprocess.run([sys.executable, "manage.py", "migrate", "bench_bare_drf", "-v0"], cwd=ROOT, check=True,
                   env=os.environ | {"DJANGO_SETTINGS_MODULE": "bench.bare_drf.settings"})  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_bare_entry (id, org_id, property_id, amount, currency, category, description,"
            " occurred_on, created_by_id, created_at, updated_at, version)"
            " SELECT gen_random_uuid(), %s, %s, 12.50, 'EUR', 'laundry', '', '2026-01-01', %s, now(), now(), 0"
            " FROM generate_series(1, %s) RETURNING id",
            [org.id, prop.id, user_id, ROWS],
        )
        bare_entry = str(cursor.fetchone()[0])

    entry = str(Expense.objects.filter(org=org).values_list("id", flat=True).first())
    return {"org": str(org.id), "token": token, "body": expense_body(prop.id), "entry": entry, "bare_entry": bare_entry,
            "orgs": "\n".join(str(o) for o, _ in targets),
            "bodies": "\n".join(expense_body(p) for _, p in targets)}  # fmt: skip


def start(kind: str) -> tuple[subprocess.Popen, int]:
    """ours, bare, or before (ours from the BENCH_BASELINE checkout)."""
    port = free_port()
    db = settings.DATABASES["default"]
    env = os.environ | {
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "ACCESS_LOG": "", "REST_PORT": str(port), "WEB_CONCURRENCY": "2", "WEB_MAX_REQUESTS": "0", "WEB_THREADS": "4",
    }  # fmt: skip
    cwd = ROOT
    if kind in ("ours", "before"):
        command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
        ready = "/v1/schema"
        cwd = Path(BASELINE) if kind == "before" else ROOT
    else:
        env["DJANGO_SETTINGS_MODULE"] = "bench.bare_drf.settings"
        command = [sys.executable, "-m", "gunicorn", *SHAPE, "--bind", f"127.0.0.1:{port}",
                   "bench.bare_drf.wsgi:application"]  # fmt: skip
        ready = "/bare/orgs/00000000-0000-0000-0000-000000000000/expenses"
    return start_server(command, env=env, port=port, ready_path=ready, cwd=cwd), port


def cases(ids: dict[str, str]) -> dict[str, dict[str, dict[str, str] | None]]:
    """case -> server -> (path and wrk environment), None where a server has no such case."""
    org, token = ids["org"], ids["token"]
    post = {"BENCH_METHOD": "POST", "BENCH_BODY": ids["body"]}
    keyed = {"BENCH_TOKEN": token, "BENCH_KEY_PREFIX": "k"}
    orgs = ids["orgs"].split("\n")

    def spread(prefix: str) -> dict[str, str]:
        paths = "\n".join(f"{prefix}/orgs/{o}/expenses" for o in orgs)
        return post | {
            "path": f"{prefix}/orgs/{org}/expenses",
            "BENCH_PATHS": paths,
            "BENCH_BODIES": ids["bodies"],
        }

    return {
        "create": {"ours": spread("/v1") | keyed, "bare": spread("/bare")},
        "create1": {
            "ours": post | {"path": f"/v1/orgs/{org}/expenses"} | keyed,
            "bare": post | {"path": f"/bare/orgs/{org}/expenses"},
        },
        "list": {
            "ours": {"path": f"/v1/orgs/{org}/expenses?page_size=20", "BENCH_TOKEN": token},
            "bare": {"path": f"/bare/orgs/{org}/expenses?page_size=20"},
        },
        "detail": {
            "ours": {"path": f"/v1/orgs/{org}/expenses/{ids['entry']}", "BENCH_TOKEN": token},
            "bare": {"path": f"/bare/orgs/{org}/expenses/{ids['bare_entry']}"},
        },
        "summary": {"ours": {"path": f"/v1/orgs/{org}/finance/summary", "BENCH_TOKEN": token}, "bare": None},
    }


def measure(process: subprocess.Popen, port: int, case: dict[str, str]) -> dict:
    pids = [process.pid, *stack_pids()]
    before = [tree_cpu_seconds(pid) for pid in pids]
    result = run_wrk(port, case, seconds=SECONDS, connections=CONNECTIONS)
    cpu = [tree_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    n = result["requests"]
    result["cpu_app"] = 1000 * cpu[0] / n
    result["cpu_pg"] = 1000 * sum(cpu[1:-1]) / n
    result["cpu_pg_primary"] = 1000 * cpu[1] / n  # the rest of cpu_pg: the replicas (replay, reads)
    result["cpu_redis"] = 1000 * cpu[-1] / n
    return result


def paced(port: int, case: dict[str, str], target_rps: float) -> dict:
    """wrk with a per-connection delay chosen so the rate is about `target_rps`: one
    calibration run measures the per-request time the delay adds to, then the run."""
    delay = 1000 * PACED_CONNECTIONS / target_rps
    probe = run_wrk(port, case, seconds=3, connections=PACED_CONNECTIONS, delay_ms=delay)
    service_ms = max(1000 * PACED_CONNECTIONS / probe["rps"] - delay, 0.0)
    delay = max(1000 * PACED_CONNECTIONS / target_rps - service_ms, 0.1)
    return run_wrk(port, case, seconds=SECONDS, connections=PACED_CONNECTIONS, delay_ms=delay)


def profile(process: subprocess.Popen, port: int, name: str, case: dict[str, str]) -> None:
    out = Path(PROFILE_DIR)
    out.mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(sys.executable).parent / "py-spy")
    for mode, extra in (("cpu", []), ("wall", ["--idle"])):
        target = out / f"{name}-{mode}.txt"
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(process.pid), "--subprocesses", "--nonblocking", "--rate", "250",
             "--format", "raw", "--duration", str(PROFILE_SECONDS), "-o", str(target), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        run_wrk(port, case, seconds=PROFILE_SECONDS, connections=CONNECTIONS)
        spy.wait(timeout=60)
        print(f"profile: {target}", flush=True)


def main() -> None:
    load_before = os.getloadavg()
    ids = prepare()
    plan = cases(ids)
    kinds = ["ours", "bare", *(["before"] if BASELINE else [])]
    for by_server in plan.values():
        by_server["before"] = by_server["ours"] if BASELINE else None
    servers = {kind: start(kind) for kind in kinds}
    results: dict[tuple[str, str], list[dict]] = {}
    half: dict[str, dict] = {}
    try:
        for by_server in plan.values():  # warm-up, discarded
            for kind, case in by_server.items():
                if case is not None:
                    run_wrk(servers[kind][1], case, seconds=2, connections=CONNECTIONS)
        for round_number in range(ROUNDS):
            for name, by_server in plan.items():
                order = [k for k in kinds if by_server[k] is not None]
                shift = round_number % len(order)
                for kind in order[shift:] + order[:shift]:  # each server goes first in turn
                    r = measure(*servers[kind], by_server[kind])  # type: ignore[arg-type]
                    results.setdefault((name, kind), []).append(r)
                    print(f"round {round_number + 1} {name:8} {kind:6} {r['rps']:7.0f} req/s  p50 {r['p50_ms']:6.1f}"
                          f"  p95 {r['p95_ms']:6.1f}  p99 {r['p99_ms']:6.1f} ms  CPU ms/req app {r['cpu_app']:.2f}"
                          f" pg {r['cpu_pg']:.2f} (primary {r['cpu_pg_primary']:.2f}) redis {r['cpu_redis']:.2f}  wrk {100 * r['wrk_cpu_share']:.0f} %",
                          flush=True)  # fmt: skip
        for name, by_server in plan.items():
            saturation = statistics.median(r["rps"] for r in results[(name, "ours")])
            half[name] = paced(servers["ours"][1], by_server["ours"], saturation / 2)  # type: ignore[arg-type]
            half[name]["target"] = saturation / 2
        if PROFILE_DIR:
            for name, by_server in plan.items():
                profile(*servers["ours"], name, by_server["ours"])  # type: ignore[arg-type]
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=20)
    report(results, half, load_before)


def report(results: dict[tuple[str, str], list[dict]], half: dict[str, dict], load_before: tuple) -> None:
    def med(name: str, kind: str, field: str) -> float:
        return statistics.median(r[field] for r in results[(name, kind)])

    print(f"\nload average before: {load_before[0]:.2f} {load_before[1]:.2f}, after: {os.getloadavg()[0]:.2f}"
          f" ({os.cpu_count()} cores)")  # fmt: skip
    print(f"gunicorn 2 workers x 4 threads each; wrk -t2 -c{CONNECTIONS}, {ROUNDS} alternating rounds x {SECONDS}s;"
          f" medians over rounds; create spread over {ORGS} orgs, create1 into one org")  # fmt: skip
    print(f"{'case':8} {'server':6} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6}  {'app':>5} {'pg':>5} {'(prim)':>6}"
          f" {'redis':>5}  {'wrk CPU':>7}")  # fmt: skip
    print(f"{'':8} {'':6} {'':>7} {'ms':>6} {'ms':>6} {'ms':>6}  {'CPU ms/request':>17}")
    for name, kind in results:
        print(f"{name:8} {kind:6} {med(name, kind, 'rps'):7.0f} {med(name, kind, 'p50_ms'):6.1f}"
              f" {med(name, kind, 'p95_ms'):6.1f} {med(name, kind, 'p99_ms'):6.1f}  {med(name, kind, 'cpu_app'):5.2f}"
              f" {med(name, kind, 'cpu_pg'):5.2f} {med(name, kind, 'cpu_pg_primary'):6.2f}"
              f" {med(name, kind, 'cpu_redis'):5.2f}"
              f"  {100 * med(name, kind, 'wrk_cpu_share'):6.0f} %")  # fmt: skip

    def cpu(name: str, kind: str) -> float:
        return sum(med(name, kind, field) for field in ("cpu_app", "cpu_pg", "cpu_redis"))

    print("\nratios (goal >= 0.6); CPU-bound: bare's server CPU per request / ours, the throughput ratio")
    print("on two free saturated cores, which a busy neighbour barely moves:")

    def ratio(name: str, kind: str, against: str) -> str:
        rounds = sorted(
            o["rps"] / b["rps"] for o, b in zip(results[(name, kind)], results[(name, against)], strict=True)
        )
        return (f"{med(name, kind, 'rps') / med(name, against, 'rps'):.2f}  (per round min {rounds[0]:.2f},"
                f" max {rounds[-1]:.2f}); CPU-bound {cpu(name, against) / cpu(name, kind):.2f}")  # fmt: skip

    for name in ("create", "create1", "list", "detail"):
        print(f"  {name:7} ours / bare DRF: {ratio(name, 'ours', 'bare')}")
    if BASELINE:
        print(f"this checkout against the baseline ({BASELINE}), same run:")
        for name in ("create", "create1", "list", "detail", "summary"):
            print(f"  {name:7} ours / before: {ratio(name, 'ours', 'before')}")
    print(f"  summary / our list: {med('summary', 'ours', 'rps') / med('list', 'ours', 'rps'):.2f};"
          f" CPU-bound {cpu('list', 'ours') / cpu('summary', 'ours'):.2f}")  # fmt: skip
    print(f"\nours at half saturation ({PACED_CONNECTIONS} paced connections; goal p95 < 20 ms):")
    for name, r in half.items():
        print(f"  {name:8} target {r['target']:6.0f} req/s, got {r['rps']:6.0f}: p50 {r['p50_ms']:5.1f}"
              f"  p95 {r['p95_ms']:5.1f}  p99 {r['p99_ms']:5.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
