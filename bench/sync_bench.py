"""Benchmark: sync pull and push next to the REST endpoints they replace, on one real
gunicorn server (2 workers) over the local stack's primary. Run with `make bench-sync`.

- an org with 100 000 entries (50 000 expenses, 50 000 revenues, each with its own
  version, as if written through the change log), seeded with one INSERT ... SELECT;
- a first pull (reset, every page, limit 1000 and the default 500) next to listing the
  same rows through the REST lists (page_size 200), in bytes (as sent, gzip accepted,
  and uncompressed) and milliseconds;
- 10 REST changes, then an incremental pull, next to the full pull;
- 1 000 creates queued by the reference client, pushed in batches of 100, next to the
  same creates sent one by one over REST with Idempotency-Key, in 5 alternating rounds
  of 200 each way; wall clock and server CPU (gunicorn, Postgres, Redis, from /proc).

One client, one request at a time, so the figures are per-request costs, not a
throughput test; the machine is shared (the load average is printed).
"""

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import django
import httpx

ROOT = Path(__file__).resolve().parent.parent
# One token drives 1 000 REST creates and the pulls: keep the per-token rate limit (and
# its Redis counter) without reaching it.
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "1000000000")
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.conf import settings
from django.db import connection

from accounts.models import User
from accounts.tokens import token_issue
from bench.idempotency import cpu_seconds, stack_pids
from syncclient import LocalStore, SyncClient
from tenancy.models import Membership, Organization, Property
from tenancy.roles import Role
from tests.live_server import free_port, wait_until_up

ROWS = int(os.environ.get("BENCH_SYNC_ROWS", "100000"))
CHANGES = 10
PUSHES = 1000
BATCH = 100
PUSH_ROUNDS = 5

logging.getLogger("httpx").setLevel(logging.WARNING)

_SEED = """
INSERT INTO {table} (id, org_id, property_id, amount, currency, category, description, occurred_on,
                     created_by_id, created_at, updated_at, version)
SELECT gen_random_uuid(), %(org)s, %(property)s, (n %% 1000) + 0.5, 'EUR', 'seeded', 'bench row ' || n,
       DATE '2026-01-01' + (n %% 300), %(user)s, now(), now(), 2 * n + %(offset)s
FROM generate_series(1, %(count)s) AS n
"""


def make_org() -> tuple[Organization, Property, User, str]:
    suffix = uuid.uuid4().hex[:8]
    user = User.objects.create_user(username=f"bench-sync-{suffix}", password=uuid.uuid4().hex)
    org = Organization.objects.create(name=f"Bench sync {suffix}")
    Membership.objects.create(org=org, user=user, role=Role.MANAGER)
    prop = Property.objects.create(org=org, name="Bench", currency="EUR", timezone="UTC")
    return org, prop, user, token_issue(user=user)[1]


def seed(org: Organization, prop: Property, user: User) -> None:
    half = ROWS // 2
    with connection.cursor() as cursor:
        for table, offset in (("finance_expense", 0), ("finance_revenue", 1)):
            cursor.execute(
                _SEED.format(table=table),
                {"org": org.id, "property": prop.id, "user": user.pk, "offset": offset, "count": half},
            )
        cursor.execute(
            "INSERT INTO org_changes (org_id, version, epoch, pruned_through) VALUES (%s, %s, '1', 0) "
            "ON CONFLICT (org_id) DO UPDATE SET version = EXCLUDED.version",
            [org.id, 2 * half + 1],
        )
        cursor.execute("ANALYZE finance_expense")
        cursor.execute("ANALYZE finance_revenue")


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    db = settings.DATABASES["default"]
    env = os.environ | {
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REPLICA_URLS": "",
        "ACCESS_LOG": "",
        "REST_PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "WEB_MAX_REQUESTS": "0",
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base_url = f"http://127.0.0.1:{port}"
    wait_until_up(base_url, process)
    return process, base_url


class Meter:
    def __init__(self) -> None:
        self.requests = 0
        self.wire = 0
        self.body = 0
        self.seconds = 0.0

    def send(self, client: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
        started = time.perf_counter()
        response = client.request(method, url, **kwargs)  # type: ignore[arg-type]
        self.seconds += time.perf_counter() - started
        self.requests += 1
        self.wire += response.num_bytes_downloaded
        self.body += len(response.content)
        assert response.status_code < 300, response.text[:300]
        return response

    def line(self, label: str) -> str:
        return (
            f"{label:<44} {self.requests:5d} requests {self.wire / 1e6:9.3f} MB sent (gzip) "
            f"{self.body / 1e6:9.3f} MB JSON {self.seconds * 1000:9.0f} ms"
        )


def pull_everything(
    http: httpx.Client, url: str, limit: int, cookie: str | None = None
) -> tuple[Meter, str, int]:
    meter, changes = Meter(), 0
    while True:
        page = meter.send(http, "POST", url, json={"cookie": cookie, "limit": limit}).json()
        changes += len(page["changes"])
        cookie = page["cookie"]
        if not page["has_more"]:
            return meter, cookie, changes


def rest_list_everything(http: httpx.Client, base: str, org_id: str) -> tuple[Meter, int]:
    meter, rows = Meter(), 0
    for kind in ("expenses", "revenues"):
        url: str | None = f"{base}/v1/orgs/{org_id}/{kind}?page_size=200"
        while url:
            page = meter.send(http, "GET", url).json()
            rows += len(page["results"])
            url = page["next"]
    return meter, rows


def push_vs_rest(
    http: httpx.Client, base: str, *, org: Organization, prop: Property, token: str, server: subprocess.Popen
) -> dict[str, list[float]]:
    """Wall seconds and server CPU seconds of the pushes and of the REST creates."""
    # Push: 1000 creates in batches of 100, vs the same one by one over REST,
    # alternating in rounds (the machine's load moves; each round sees both).
    payload = {
        "property_id": str(prop.id),
        "currency": "EUR",
        "category": "pushed",
        "occurred_on": "2026-11-01",
    }
    per_round = PUSHES // PUSH_ROUNDS
    measured = [[server.pid], *stack_pids()]

    def push_round(round_number: int) -> None:
        client = SyncClient(base, token, str(org.id), LocalStore(), http=http, pull_limit=1000)
        for n in range(per_round):
            client.create("expense", amount=f"{n % 500 + 1}.25", **payload)
        results = client.push(batch_size=BATCH)
        assert [r["status"] for r in results] == ["applied"] * per_round

    def rest_round(round_number: int) -> None:
        for n in range(per_round):
            response = http.post(
                f"{base}/v1/orgs/{org.id}/expenses",
                json={"amount": f"{n % 500 + 1}.25", **payload},
                headers={"Idempotency-Key": f"bench-{org.id}-{round_number}-{n}"},
            )
            assert response.status_code == 201

    cases = {"push": push_round, "rest": rest_round}
    spent = {name: [0.0, 0.0] for name in cases}  # wall seconds, server CPU seconds
    for round_number in range(PUSH_ROUNDS):
        for name in list(cases) if round_number % 2 == 0 else reversed(list(cases)):
            cpu_before = sum(cpu_seconds(measured))
            started = time.perf_counter()
            cases[name](round_number)
            spent[name][0] += time.perf_counter() - started
            spent[name][1] += sum(cpu_seconds(measured)) - cpu_before
    return spent


def main() -> None:
    load_before = os.getloadavg()[0]
    org, prop, user, token = make_org()
    started = time.perf_counter()
    seed(org, prop, user)
    print(f"seeded {ROWS} entries in {time.perf_counter() - started:.1f} s; load average {load_before:.2f}")
    server, base = start_server()
    headers = {"Authorization": f"Token {token}", "Accept-Encoding": "gzip"}
    pull_url = f"{base}/v1/orgs/{org.id}/sync/pull"
    try:
        with httpx.Client(timeout=120, headers=headers) as http:
            pull_everything(http, pull_url, 1000)  # warm-up (caches, connections), discarded
            full_1000, cookie, pulled = pull_everything(http, pull_url, 1000)
            full_500, _, _ = pull_everything(http, pull_url, 500)
            rest, listed = rest_list_everything(http, base, str(org.id))
            assert pulled == ROWS + 1 and listed == ROWS, (pulled, listed)
            rows = http.get(f"{base}/v1/orgs/{org.id}/expenses?page_size={CHANGES}").json()["results"]
            for row in rows:
                patch = http.patch(f"{base}/v1/orgs/{org.id}/expenses/{row['id']}", json={"amount": "1.23"})
                assert patch.status_code == 200
            incremental = [pull_everything(http, pull_url, 1000, cookie) for _ in range(5)]
            assert all(changes == CHANGES for _, _, changes in incremental)
            inc = min(incremental, key=lambda run: run[0].seconds)[0]

            spent = push_vs_rest(http, base, org=org, prop=prop, token=token, server=server)
    finally:
        server.terminate()
        server.wait(timeout=20)
        with connection.cursor() as cursor:  # the dev database keeps nothing of the run
            for table in ("finance_expense", "finance_revenue"):
                cursor.execute(f"DELETE FROM {table} WHERE org_id = %s", [org.id])

    print(full_1000.line(f"first pull, all pages, limit 1000 ({ROWS + 1} rows)"))
    print(full_500.line("first pull, all pages, limit 500"))
    print(rest.line("REST lists, all pages, page_size 200"))
    print(inc.line(f"incremental pull after {CHANGES} changes (best of 5)"))
    print(
        f"incremental / first pull (limit 1000): {100 * inc.wire / full_1000.wire:.3f} % of the bytes sent, "
        f"{100 * inc.seconds / full_1000.seconds:.3f} % of the time (goal: under 1 %)"
    )
    print(
        f"first pull (limit 1000) / REST lists: {full_1000.wire / rest.wire:.2f}x the bytes, "
        f"{full_1000.seconds / rest.seconds:.2f}x the time"
    )
    (push_seconds, push_cpu), (rest_seconds, rest_cpu) = spent["push"], spent["rest"]
    push_rate, rest_rate = PUSHES / push_seconds, PUSHES / rest_seconds
    print(f"{PUSHES} creates each way, {PUSH_ROUNDS} alternating rounds:")
    print(
        f"push in batches of {BATCH}: {push_rate:7.0f} mutations/s ({push_seconds:.2f} s), "
        f"{1000 * push_cpu / PUSHES:.2f} ms server CPU per mutation"
    )
    print(
        f"REST creates one by one with Idempotency-Key: {rest_rate:7.0f} creates/s ({rest_seconds:.2f} s), "
        f"{1000 * rest_cpu / PUSHES:.2f} ms server CPU per create"
    )
    print(
        f"batched push / REST creates: {push_rate / rest_rate:.2f}x by wall clock, "
        f"{rest_cpu / push_cpu:.2f}x by server CPU (goal: at least 3x)"
    )
    print(f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f} (a shared machine)")


if __name__ == "__main__":
    main()
