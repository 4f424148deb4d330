"""Edge cache benchmark: reads through Varnish (the shipped VCL) next to the same reads
straight to gunicorn, in one run.

    make bench-edge [BENCH_SECONDS=10 BENCH_CONNECTIONS=16 BENCH_ORGS=20]

Cases: the finance summary of one org; a read-heavy mix over BENCH_ORGS orgs (summary
50 %, expense list 30 %, expense detail 10 %, property list 10 %, each org with its own
token); the same mix with 1 % writes (POST expense, which purges); and the summary with
the auth preflight never cached (CDN_AUTH_TTL_SECONDS=0), which prices the preflight.
Prints throughput, p50/p95/p99, the hit rate seen in X-Cache and in varnishstat, and
the cached/uncached throughput ratio.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# One token drives the whole load here: keep the per-token rate limit (and its Redis
# counter, a real cost) without ever reaching it.
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "1000000000")
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from accounts.models import User
from accounts.tokens import token_issue
from bench.harness import start_server, wrk_result
from finance.models import Expense
from finance.totals_repair import org_totals_rebuild
from tenancy.models import Property
from tenancy.services import organization_create
from tests.varnish_server import Varnish

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
ORGS = int(os.environ.get("BENCH_ORGS", "20"))
PORT = int(os.environ.get("BENCH_PORT", "8093"))
WORKERS = os.environ.get("BENCH_WORKERS", "2")
ENTRIES_PER_ORG = 100


def prepare() -> list[tuple[str, str, str, list[str]]]:
    """ORGS bench orgs, each with an owner token, a property and 100 expenses."""
    orgs = []
    for n in range(ORGS):
        user, _ = User.objects.get_or_create(username=f"bench-edge-{n}")
        membership = user.memberships.select_related("org").first() or organization_create(
            name=f"Edge bench {n}", owner=user
        )
        org = membership.org
        prop = Property.objects.filter(org=org).first() or Property.objects.create(
            org=org, name="Bench hotel", currency="EUR", timezone="UTC"
        )
        missing = ENTRIES_PER_ORG - Expense.objects.filter(org=org).count()
        Expense.objects.bulk_create(
            Expense(org=org, property=prop, amount="12.50", currency="EUR", category="laundry",
                    occurred_on="2026-01-01", created_by=user)
            for _ in range(max(missing, 0))
        )  # fmt: skip
        org_totals_rebuild(org_id=org.id)  # bulk_create bypasses the services: the summary's totals
        _, token = token_issue(user=user)
        ids = [str(i) for i in Expense.objects.filter(org=org).values_list("id", flat=True)[:10]]
        orgs.append((token, str(org.id), str(prop.id), ids))
    return orgs


def request_file(orgs: list[tuple[str, str, str, list[str]]], *, kind: str) -> Path:
    lines = []
    for token, org, prop, ids in orgs:
        base = f"/v1/orgs/{org}"
        if kind == "summary":
            lines.append(f"GET\t{base}/finance/summary\t{token}")
            continue
        block = [f"GET\t{base}/finance/summary\t{token}"] * 5 + [
            f"GET\t{base}/expenses?page_size=20\t{token}"
        ] * 3
        block += [f"GET\t{base}/expenses/{ids[0]}\t{token}", f"GET\t{base}/properties\t{token}"]
        lines += block * 10  # 100 requests per org
        if kind == "mix+writes":  # 1 write per 100 requests
            body = json.dumps({"property_id": prop, "amount": "1.00", "currency": "EUR",
                               "category": "bench", "occurred_on": "2026-01-02"})  # fmt: skip
            lines[-1] = f"POST\t{base}/expenses\t{token}\t{body}"
    if kind == "summary":
        lines = lines[:1]  # one org: the hottest object
    path = Path(tempfile.mkstemp(prefix=f"bench-edge-{kind}-", suffix=".tsv")[1])
    path.write_text("\n".join(lines) + "\n")
    return path


def start_gunicorn(varnish_port: int, auth_ttl: int) -> subprocess.Popen:
    env = os.environ | {
        "REST_PORT": str(PORT), "ACCESS_LOG": "", "WEB_CONCURRENCY": WORKERS, "WEB_MAX_REQUESTS": "0", "CDN_PROVIDER": "varnish",
        "CDN_VARNISH_URLS": f"http://127.0.0.1:{varnish_port}", "CDN_AUTH_TTL_SECONDS": str(auth_ttl),
    }  # fmt: skip
    command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
    return start_server(command, env=env, port=PORT, ready_path="/v1/system/health")


def wrk(base_url: str, requests: Path) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "-s", str(ROOT / "bench/wrk_edge.lua"),
               base_url, "--", str(requests)]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return wrk_result(output)


def report(name: str, r: dict[str, float], lookups: tuple[int, int] | None = None) -> None:
    cached = r["hits"] + r["misses"]
    hit_rate = f"{100 * r['hits'] / cached:5.1f} %" if cached else "   -   "
    counters = f"  varnishstat {100 * lookups[0] / sum(lookups):5.1f} %" if lookups and sum(lookups) else ""
    print(f"{name:44} {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  p95 {r['p95']:6.2f} ms  "
          f"p99 {r['p99']:6.2f} ms  hit {hit_rate}{counters}  errors {int(r['errors'] + r['non2xx'])}",
          flush=True)  # fmt: skip


def main() -> None:
    if not shutil.which("wrk") or not shutil.which("varnishd"):
        raise SystemExit("needs wrk and varnishd: make bench-tools, bin/stack up")
    orgs = prepare()
    files = {kind: request_file(orgs, kind=kind) for kind in ("summary", "mix", "mix+writes")}
    varnish = Varnish(rest_port=PORT, realtime_port=PORT + 1)
    results: dict[str, dict[str, float]] = {}
    try:
        varnish.start()
        for auth_ttl in (5, 0):
            gunicorn = start_gunicorn(varnish.port, auth_ttl)
            try:
                cases = (
                    [("summary, direct to gunicorn", f"http://127.0.0.1:{PORT}", "summary"),
                     ("summary, through Varnish", varnish.base_url, "summary"),
                     ("read mix, direct to gunicorn", f"http://127.0.0.1:{PORT}", "mix"),
                     ("read mix, through Varnish", varnish.base_url, "mix"),
                     ("read mix + 1 % writes, through Varnish", varnish.base_url, "mix+writes")]
                    if auth_ttl else
                    [("summary, through Varnish, preflight uncached", varnish.base_url, "summary")]
                )  # fmt: skip
                for name, base_url, kind in cases:
                    wrk(base_url, files[kind])  # warm-up pass, discarded
                    before = varnish.counters()
                    results[name] = wrk(base_url, files[kind])
                    after = varnish.counters()
                    lookups = None
                    if base_url == varnish.base_url:
                        lookups = (after["MAIN.cache_hit"] - before["MAIN.cache_hit"],
                                   after["MAIN.cache_miss"] - before["MAIN.cache_miss"])  # fmt: skip
                    report(name, results[name], lookups)
            finally:
                gunicorn.terminate()
                gunicorn.wait(timeout=20)
    finally:
        varnish.cleanup()
        for path in files.values():
            path.unlink()
    print()
    ratio = results["summary, through Varnish"]["rps"] / results["summary, direct to gunicorn"]["rps"]
    print(f"summary: cached / uncached throughput = {ratio:.1f}x")
    ratio = results["read mix, through Varnish"]["rps"] / results["read mix, direct to gunicorn"]["rps"]
    print(f"read mix: cached / uncached throughput = {ratio:.1f}x")
    cached = results["summary, through Varnish"]["p50"]
    uncached_auth = results["summary, through Varnish, preflight uncached"]["p50"]
    print(f"auth preflight: p50 {cached:.2f} ms when cached vs {uncached_auth:.2f} ms when asked of the origin "
          "every time")  # fmt: skip
    print(f"\n(gunicorn {WORKERS} workers x 4 threads, Varnish malloc 64m, wrk -t2 -c{CONNECTIONS} -d{SECONDS}s, "
          f"{ORGS} orgs, same machine)")  # fmt: skip


if __name__ == "__main__":
    main()
