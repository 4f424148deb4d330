"""Serving benchmark: our REST path next to bare Django and bare DRF baselines, under
gunicorn (WSGI, gthread) and uvicorn (ASGI, httptools + uvloop), in one run.

    make bench-serving [BENCH_SECONDS=10 BENCH_CONNECTIONS=16]

Needs the local stack (bin/stack up) and wrk. Prints requests/s and p50/p95/p99 per
case and the ratios that matter: our list vs bare DRF, WSGI vs ASGI.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# One token drives the whole load here: keep the per-token rate limit (and its Redis
# counter, a real cost) without ever reaching it.
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "1000000000")
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from accounts.models import User
from accounts.tokens import token_issue
from bench.harness import start_server, wrk_result
from finance.models import Expense
from finance.totals_repair import org_totals_rebuild
from tenancy.models import Property
from tenancy.services import organization_create

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
PORT = int(os.environ.get("BENCH_PORT", "8091"))
WORKERS = os.environ.get("BENCH_WORKERS", "2")


def prepare() -> tuple[str, str]:
    """A bench org with 200 expenses; returns (token, org id)."""
    user, _ = User.objects.get_or_create(username="bench-serving")
    membership = user.memberships.select_related("org").first() or organization_create(
        name="Bench", owner=user
    )
    org = membership.org
    prop = Property.objects.filter(org=org).first() or Property.objects.create(
        org=org, name="Bench hotel", currency="EUR", timezone="UTC"
    )
    missing = 200 - Expense.objects.filter(org=org).count()
    Expense.objects.bulk_create(
        Expense(org=org, property=prop, amount="12.50", currency="EUR", category="laundry",
                occurred_on="2026-01-01", created_by=user)
        for _ in range(max(missing, 0))
    )  # fmt: skip
    org_totals_rebuild(org_id=org.id)  # bulk_create bypasses the services: the summary's totals
    _, token = token_issue(user=user)
    return token, str(org.id)


def start(kind: str) -> subprocess.Popen:
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "bench.settings", "REST_PORT": str(PORT), "ACCESS_LOG": ""}
    if kind == "gunicorn":
        command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "--workers", WORKERS,
                   "config.wsgi"]  # fmt: skip
    else:
        command = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(PORT),
                   "--workers", WORKERS, "--http", "httptools", "--loop", "uvloop", "--log-level", "warning",
                   "--no-access-log"]  # fmt: skip
    return start_server(command, env=env, port=PORT, ready_path="/bench/bare-django")


def wrk(path: str, token: str | None) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "-s", str(ROOT / "bench/wrk_report.lua")]
    if token:
        command += ["-H", f"Authorization: Token {token}"]
    output = subprocess.run([*command, f"http://127.0.0.1:{PORT}{path}"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    return wrk_result(output)


def main() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk (make bench-serving installs it as root)")
    token, org_id = prepare()
    cases = [
        ("bare Django view", "/bench/bare-django", None),
        ("bare DRF list", "/bench/bare-drf", None),
        ("expenses list (20 rows)", f"/v1/orgs/{org_id}/expenses?page_size=20", token),
        ("finance summary", f"/v1/orgs/{org_id}/finance/summary", token),
    ]
    results: dict[tuple[str, str], dict[str, float]] = {}
    for server in ("gunicorn", "uvicorn"):
        process = start(server)
        try:
            for name, path, auth in cases:
                wrk(path, auth)  # warm-up pass, discarded
                results[(server, name)] = wrk(path, auth)
                r = results[(server, name)]
                print(f"{server:9} {name:26} {r['rps']:8.0f} req/s  p50 {r['p50']:6.1f} ms  "
                      f"p95 {r['p95']:6.1f} ms  p99 {r['p99']:6.1f} ms  errors {int(r['errors'] + r['non2xx'])}",
                      flush=True)  # fmt: skip
        finally:
            process.terminate()
            process.wait(timeout=20)
    print()
    for server in ("gunicorn", "uvicorn"):
        ours = results[(server, "expenses list (20 rows)")]["rps"]
        bare = results[(server, "bare DRF list")]["rps"]
        print(f"{server}: expenses list / bare DRF list = {ours / bare:.2f}")
    for name, _, _ in cases:
        ratio = results[("gunicorn", name)]["rps"] / results[("uvicorn", name)]["rps"]
        print(f"gunicorn / uvicorn, {name}: {ratio:.2f}x")
    print(f"\n(2 workers each, wrk -t2 -c{CONNECTIONS} -d{SECONDS}s, same machine as the servers)")


if __name__ == "__main__":
    main()
