"""`make loadtest`: the whole proof in one command.

1. Seeds LOADTEST_ORGS organizations (100 000 by default; re-runs only top up) and
   writes their credentials.
2. Starts the full stack: Postgres primary + replicas, Redis, Varnish, and the servers
   (bin/serve: gunicorn for REST, uvicorn for websockets).
3. Runs Locust headless through the edge (Varnish) for LOADTEST_DURATION seconds with
   LOADTEST_USERS users (LOADTEST_WS_USERS of them on websockets), while a fault drill
   stops and restarts a replica, restarts Redis and restarts Varnish.
4. Checks the database against what clients were told: every acknowledged write exists
   exactly once, no idempotency key was used twice, websocket users that stayed
   connected received every change of their org.
5. Measures the bare create-and-list path (no idempotency, no replicas, no metrics, no
   cache) against the full path with the same Locust users, and prints the ratios.
6. Writes reports/loadtest-<timestamp>/report.md and summary.csv (plus Locust's CSVs).
"""

import csv
import datetime
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

DURATION = int(os.environ.get("LOADTEST_DURATION", "120"))
USERS = int(os.environ.get("LOADTEST_USERS", "40"))
SPAWN_RATE = int(os.environ.get("LOADTEST_SPAWN_RATE", "10"))
WS_USERS = int(os.environ.get("LOADTEST_WS_USERS", "10"))
MOBILE_USERS = int(os.environ.get("LOADTEST_MOBILE_USERS", "10"))
HOT_ORGS = int(os.environ.get("LOADTEST_HOT_ORGS", "20"))  # the orgs that take REST writes
LARGE_EXPENSE = "1000.00"  # EUR: the alert threshold of the hot orgs' managers
ORGS = int(os.environ.get("LOADTEST_ORGS", "100000"))
BASELINE_SECONDS = int(os.environ.get("LOADTEST_BASELINE_SECONDS", "30"))
BASELINE_USERS = int(os.environ.get("LOADTEST_BASELINE_USERS", "20"))
FAULTS = os.environ.get("LOADTEST_FAULTS", "1") == "1"
PORT = os.environ.get("PORT", "8000")  # the public origin: the edge (REST, admin, websockets)
REST_PORT = os.environ.get("REST_PORT", "8002")  # gunicorn behind it: the bare-path baseline
METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or "loadtest-metrics-token"
EDGE = f"http://127.0.0.1:{PORT}"
ORIGIN = f"http://127.0.0.1:{REST_PORT}"


def say(message: str) -> None:
    print(f"[loadtest {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, check=True, **kwargs)


def get_json(url: str, token: str | None = METRICS_TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (a loopback URL built here)
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


class Servers:
    """bin/serve in the background, with the given environment."""

    def __init__(self, **env: str) -> None:
        self.env = os.environ | {"METRICS_TOKEN": METRICS_TOKEN, "ACCESS_LOG": "", **env}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Servers":
        self.process = subprocess.Popen(["bin/serve"], cwd=ROOT, env=self.env, start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                get_json(f"{ORIGIN}/v1/system/health", token=None)
                return self
            except OSError:
                time.sleep(0.5)
        raise SystemExit("the servers did not come up in 60 s (try bin/serve by hand to see why)")

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


# The youngest child of the gunicorn master: a worker, busy (the load never stops).
KILL_A_GUNICORN_WORKER = (
    "master=$(pgrep -of 'gunicorn -c config/gunicorn.py') && worker=$(pgrep -nP \"$master\") "
    '&& kill -KILL "$worker"'
)


@dataclass
class Drill:
    """The fault drill: (fraction of the run, description, command)."""

    steps: list[tuple[float, str, list[str]]] = field(
        default_factory=lambda: [
            (0.15, "restart the primary (pg_ctl restart -m fast)", ["bin/stack", "pg-restart"]),
            (0.25, "stop replica 1", ["bin/stack", "pg-replica-stop", "1"]),
            (0.40, "start replica 1", ["bin/stack", "pg-replica-start", "1"]),
            (0.50, "restart Redis", ["bin/stack", "redis-restart"]),
            (0.65, "restart Varnish", ["bin/stack", "varnish-restart"]),
            (0.80, "SIGKILL a gunicorn worker mid-request", ["bash", "-c", KILL_A_GUNICORN_WORKER]),
        ]
    )
    log: list[tuple[float, float, str, int]] = field(default_factory=list)  # start, took, step, exit

    def run_in_background(self, started: float, duration: int) -> threading.Thread:
        def drill() -> None:
            for fraction, name, command in self.steps:
                time.sleep(max(0.0, started + fraction * duration - time.time()))
                say(f"fault drill: {name}")
                began = time.time()
                result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
                self.log.append((began - started, time.time() - began, name, result.returncode))
                if result.returncode:
                    say(f"fault drill step failed: {result.stderr.strip()[-300:]}")

        thread = threading.Thread(target=drill, daemon=True)
        thread.start()
        return thread


def locust(
    out: Path, *, host: str, users: int, seconds: int, classes: list[str], env: dict[str, str]
) -> Path:
    prefix = out / "locust"
    command = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless", "--users", str(users),
               "--spawn-rate", str(SPAWN_RATE), "--run-time", f"{seconds}s", "--host", host, "--csv", str(prefix),
               "--stop-timeout", "10", "--only-summary", *classes]  # fmt: skip
    children_before, busy_before = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_seconds()
    subprocess.run(command, cwd=ROOT, env=os.environ | env, check=False)
    children_after, busy_after = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_seconds()
    used = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    busy = busy_after - busy_before
    LOAD_GENERATOR_CPU[str(prefix)] = {"locust_cpu_seconds": round(used, 1), "machine_busy_cpu_seconds": round(busy, 1),
                                       "locust_share_of_busy_cpu": f"{used / busy:.0%}" if busy else "n/a"}  # fmt: skip
    return Path(f"{prefix}_stats.csv")


# The load generator shares the machine's cores: what it used, next to all CPU in use.
LOAD_GENERATOR_CPU: dict[str, dict[str, Any]] = {}


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (not idle or waiting), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def edge_hit_rate() -> str:
    """Varnish's own counters (since its last start: the drill restarts it)."""
    result = subprocess.run(["bin/stack", "varnishstat", "-1", "-f", "MAIN.cache_hit", "-f", "MAIN.cache_miss"],
                            cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    counts = {line.split()[0]: int(line.split()[1]) for line in result.stdout.splitlines() if line.strip()}
    hits, misses = counts.get("MAIN.cache_hit", 0), counts.get("MAIN.cache_miss", 0)
    return f"{hits / (hits + misses):.1%} ({hits} hits, {misses} misses)" if hits + misses else "n/a"


def read_stats(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {f"{row['Type']} {row['Name']}": row for row in csv.DictReader(f)}


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_database(journal: list[dict[str, Any]], run_started: float) -> dict[str, Any]:
    """Compare what clients were told with what the database holds."""
    import django

    django.setup()
    from django.db import connection

    from finance.models import Expense, Revenue

    models = {"expenses": Expense, "revenues": Revenue}
    created = [r for r in journal if r["op"] == "create"]
    deleted = {(r["kind"], r["id"]) for r in journal if r["op"] == "delete"}
    last_amount: dict[tuple[str, str], str] = {}
    for record in journal:
        if record["op"] in ("create", "update"):
            last_amount[(record["kind"], record["id"])] = record["amount"]

    missing, wrong_amount, resurrected = [], [], []
    for kind, model in models.items():
        ids = [r["id"] for r in created if r["kind"] == kind]
        rows = dict(model.objects.filter(id__in=ids).values_list("id", "amount"))
        rows = {str(k): f"{v:.2f}" for k, v in rows.items()}
        for entry_id in ids:
            if (kind, entry_id) in deleted:
                if entry_id in rows:
                    resurrected.append(entry_id)
            elif entry_id not in rows:
                missing.append(entry_id)
            elif rows[entry_id] != last_amount[(kind, entry_id)]:
                wrong_amount.append(entry_id)

    # Rows created during the run in the orgs that took writes, beyond those acknowledged:
    # a retried create that wrote twice would show up here.
    orgs = {r["org_id"] for r in created}
    since = datetime.datetime.fromtimestamp(run_started, tz=datetime.UTC)
    acknowledged_ids = {r["id"] for r in created}
    unacknowledged = 0
    for model in models.values():
        unacknowledged += (
            model.objects.filter(org_id__in=orgs, created_at__gte=since)
            .exclude(id__in=acknowledged_ids)
            .count()
        )
    duplicate_keys = len(created) - len({r["key"] for r in created})
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('idempotency_record') IS NOT NULL")
        has_records = cursor.fetchone()[0]
    return {
        "acknowledged_creates": len(created),
        "missing_rows": len(missing),
        "wrong_amounts": len(wrong_amount),
        "deleted_but_present": len(resurrected),
        "rows_not_acknowledged": unacknowledged,
        "duplicate_keys_in_journal": duplicate_keys,
        "idempotency_table_present": has_records,
    }


def check_websockets(journal: list[dict[str, Any]], grace: float = 2.0) -> dict[str, Any]:
    """Each socket that stayed up must have received every create of its org made while it was up."""
    creates_by_org: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in journal:
        if record["op"] == "create":
            creates_by_org[record["org_id"]].append(record)
    sockets = [r for r in journal if r["op"] == "ws"]
    stayed = [s for s in sockets if not s["dropped"]]
    lost = 0
    expected_total = 0
    for socket in stayed:
        received = {e["id"] for e in socket["events"] if (e.get("type") or "").endswith(".created")}
        expected = {c["id"] for c in creates_by_org[socket["org_id"]]
                    if socket["connected_at"] + grace <= c["t"] <= socket["left_at"] - grace}  # fmt: skip
        expected_total += len(expected)
        lost += len(expected - received)
    # commit (the event's ts) to arrival, for live events (a replay after a reconnect
    # carries old commits and is left out: it measures the outage, not the path)
    delays = sorted(
        e["at"] - datetime.datetime.fromisoformat(e["ts"]).timestamp()
        for s in sockets for e in s["events"]
        if e.get("ts") and e.get("at") and e["at"] - s["connected_at"] > grace
    )  # fmt: skip
    return {
        "commit_to_socket_p50_ms": round(1000 * delays[len(delays) // 2]) if delays else None,
        "commit_to_socket_p95_ms": round(1000 * delays[int(0.95 * (len(delays) - 1))]) if delays else None,
        "sockets": len(sockets),
        "stayed_connected": len(stayed),
        "events_expected": expected_total,
        "events_lost": lost,
        "events_received": sum(len(s["events"]) for s in sockets),
    }


class PushDevices:
    """Each hot org's manager has the large-expense alert on (EUR >= 1000) and two Web
    Push subscriptions, made as a browser makes them, on one local push service that
    records what arrives (tests/push_servers.py: answers 201 like the real ones)."""

    ENDPOINT_PATH = "/loadtest-push/"

    def __init__(self, credentials: Path) -> None:
        import django

        django.setup()
        from push.models import Device, NotificationPreference
        from tests.push_servers import Http1PushServer
        from tests.push_support import Browser

        self.server = Http1PushServer().__enter__()  # a daemon thread: it ends with the run
        Device.objects.filter(address__contains=self.ENDPOINT_PATH).delete()  # an earlier run's
        with open(credentials) as f:
            rows = list(csv.DictReader(f))
        hot = list(dict.fromkeys(r["org_id"] for r in rows))[:HOT_ORGS]
        managers = {r["org_id"]: r for r in rows if r["org_id"] in hot and r["username"].endswith("-u1")}
        self.browsers: dict[str, Any] = {}  # path -> Browser
        self.devices_by_org: dict[str, list[str]] = defaultdict(list)
        from accounts.models import User

        for org_id, row in managers.items():
            user = User.objects.get(username=row["username"])
            NotificationPreference.objects.update_or_create(
                org_id=org_id, user=user,
                defaults={"large_expense_enabled": True, "large_expense_thresholds": {"EUR": LARGE_EXPENSE}},
            )  # fmt: skip
            for n in range(2):
                path = f"{self.ENDPOINT_PATH}{org_id}/{n}"
                browser = Browser(self.server.url + path)
                keys = browser.subscription["keys"]
                Device.objects.create(user=user, kind="webpush", address=browser.endpoint, p256dh=keys["p256dh"],
                                      auth=keys["auth"])  # fmt: skip
                self.browsers[path] = browser
                self.devices_by_org[org_id].append(path)

    def check(self, journal: list[dict[str, Any]], run_started: float) -> dict[str, Any]:
        """Every acknowledged large expense reached each of its org's devices exactly once.
        (An earlier, aborted run may have left changes in the outbox: their alerts reach
        these devices too, rightly, and are counted apart.)"""
        from decimal import Decimal

        from django.db.models import Count

        from push.models import Delivery

        deadline = time.monotonic() + 60
        while (
            Delivery.objects.filter(status__in=("pending", "sending")).exists()
            and time.monotonic() < deadline
        ):
            time.sleep(1)
        large = {r["id"]: r["org_id"] for r in journal if r["op"] == "create" and r["kind"] == "expenses"
                 and r["org_id"] in self.devices_by_org and Decimal(r["amount"]) >= Decimal(LARGE_EXPENSE)}  # fmt: skip
        alerts = Delivery.objects.filter(notification_type="expense.large")
        before = datetime.datetime.fromtimestamp(run_started, tz=datetime.UTC)
        earlier = {
            key.partition(":")[2]
            for key in alerts.filter(committed_at__lt=before).values_list("event_key", flat=True)
        }
        received: dict[tuple[str, str], int] = defaultdict(int)
        arrived_at: dict[str, float] = {}
        pokes = 0
        for request in list(self.server.requests):
            payload = self.browsers[request.path].decrypt(request.body)
            if "expense_id" not in payload:
                pokes += 1
                continue
            if payload["expense_id"] in earlier:
                continue
            received[(request.path, payload["expense_id"])] += 1
            arrived_at.setdefault(payload["expense_id"], request.received_at)
        expected = {(path, expense) for expense, org in large.items() for path in self.devices_by_org[org]}
        committed = {
            key.partition(":")[2]: at.timestamp()
            for key, at in alerts.values_list("event_key", "committed_at")
        }
        delays = sorted(arrived_at[e] - committed[e] for e in arrived_at if e in committed)
        outcomes = dict(alerts.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
        return {
            "devices": sum(len(paths) for paths in self.devices_by_org.values()),
            "large_expenses_acknowledged": len(large),
            "alerts_expected": len(expected),
            "alerts_missing": sum(1 for pair in expected if received[pair] == 0),
            "alerts_doubled": sum(1 for pair in expected if received[pair] > 1),
            "alerts_unexpected": sum(1 for pair in received if pair not in expected),
            "alerts_for_changes_of_earlier_runs": len(earlier),
            "alert_deliveries_by_status": outcomes,
            "sync_pokes_received": pokes,
            "commit_to_push_p50_ms": round(1000 * delays[len(delays) // 2]) if delays else None,
            "commit_to_push_p95_ms": round(1000 * delays[int(0.95 * (len(delays) - 1))]) if delays else None,
        }


def check_sync_clients(journal: list[dict[str, Any]]) -> dict[str, Any]:
    """Every phone's store, reopened from disk, finishes its queue (all phones first),
    then pulls: it must equal a fresh full pull of its org and the org's rows, and the
    server must have processed each of its mutation ids exactly once, in order."""
    import django

    django.setup()
    from finance.models import Expense, Revenue
    from sync.models import SyncClient as SyncClientRow
    from syncclient import LocalStore, SyncClient

    phones = [r for r in journal if r["op"] == "sync_client"]
    clients = [(r, SyncClient(ORIGIN, r["token"], r["org_id"], LocalStore.open(r["store"]))) for r in phones]
    unfinished = 0
    for _, client in clients:  # every queue reaches the server before anyone's last pull
        client.push()
        unfinished += bool(client.outgoing())
    diverged, lost_or_doubled, queued_left = [], 0, 0
    for record, client in clients:
        client.pull()
        queued_left += len(client.store.pending)
        fresh = SyncClient(ORIGIN, record["token"], record["org_id"], LocalStore())
        fresh.pull()
        entries = {k: v for k, v in fresh.store.base.items() if not k.startswith("property:")}
        rows = sum(m.objects.filter(org_id=record["org_id"]).count() for m in (Expense, Revenue))
        if client.store.base != fresh.store.base or len(entries) != rows:
            diverged.append(record["client_id"])
        server = SyncClientRow.objects.filter(org_id=record["org_id"], client_id=record["client_id"]).first()
        processed = server.last_mutation_id if server else 0
        if processed != client.store.next_mutation_id - 1:
            lost_or_doubled += 1
    return {
        "phones": len(phones),
        "mutations_queued": sum(c.store.next_mutation_id - 1 for _, c in clients),
        "stores_diverged_from_server": len(diverged),
        "phones_whose_mutation_ids_the_server_did_not_all_process": lost_or_doubled,
        "mutations_still_queued_after_final_sync": queued_left,
        "queues_blocked": unfinished,
    }


def check_after_effects() -> dict[str, Any]:
    """The outbox drains (every after-write effect ran) and the read model matches."""
    import django

    django.setup()
    from changelog.selectors import outbox_status

    deadline = time.monotonic() + 60
    status = outbox_status()
    while status.pending and time.monotonic() < deadline:
        time.sleep(1)
        status = outbox_status()
    verify = subprocess.run([sys.executable, "manage.py", "finance_totals", "verify"], cwd=ROOT,
                            capture_output=True, text=True, check=False)  # fmt: skip
    return {
        "outbox_pending_after_60s": status.pending,
        "outbox_dead_letters": status.dead,
        "finance_totals_verify_exit": verify.returncode,
        "finance_totals_verify_output": verify.stdout.strip().splitlines()[-1:] or [""],
    }


def replica_share(stats: dict[str, Any]) -> str:
    """Share of GET reads that replicas served (reads inside write requests are pinned
    to the primary by design and left out). One gunicorn process's view."""
    reads = stats.get("reads", {})
    on_replicas = sum(count for alias, count in reads.items() if alias != "default")
    pinned = stats.get("fallbacks_to_primary", {}).get("write_request", 0)
    on_primary = reads.get("default", 0) - pinned
    total = on_replicas + on_primary
    share = on_replicas / total if total else 0.0
    return (f"{share:.1%} of {total} reads outside write requests ({on_replicas} on replicas, {on_primary} "
            f"on the primary: {json.dumps({k: v for k, v in stats.get('fallbacks_to_primary', {}).items() if k != 'write_request'})}); "
            f"scope: {stats.get('scope', 'process')}.")  # fmt: skip


def ratio_row(name: str, full: dict[str, str], bare: dict[str, str]) -> str:
    full_rps, bare_rps = float(full["Requests/s"]), float(bare["Requests/s"])
    return (f"| {name} | {bare_rps:.0f} | {full_rps:.0f} | {full_rps / bare_rps if bare_rps else 0:.2f} | "
            f"{bare['95%']} | {full['95%']} |")  # fmt: skip


def main() -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "reports" / f"loadtest-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    credentials = ROOT / "reports" / "credentials.csv"

    say("starting the local stack")
    run(["bin/stack", "up"], stdout=subprocess.DEVNULL)
    run([sys.executable, "manage.py", "migrate", "--noinput"], stdout=subprocess.DEVNULL)
    say(f"seeding {ORGS} orgs (5 properties, 5 users each; only what is missing)")
    run([sys.executable, "manage.py", "seed_orgs", "--orgs", str(ORGS), "--properties-per-org", "5",
         "--users-per-org", "5", "--entries-per-property", "2", "--credentials-out", str(credentials)])  # fmt: skip

    journal_path = out / "journal.jsonl"
    locust_env = {"LOADTEST_CREDENTIALS": str(credentials), "LOADTEST_JOURNAL": str(journal_path),
                  "LOADTEST_WS_USERS": str(WS_USERS), "LOADTEST_WS_URL": f"ws://127.0.0.1:{PORT}",
                  "LOADTEST_MOBILE_USERS": str(MOBILE_USERS), "LOADTEST_SYNC_STORES": str(out / "sync-stores")}  # fmt: skip

    push_devices = PushDevices(credentials)
    with Servers():
        say(
            f"full path: {USERS} API users, {WS_USERS} on websockets, {MOBILE_USERS} offline-capable phones, "
            f"for {DURATION}s through {EDGE}"
        )
        drill = Drill()
        started = time.time()
        if FAULTS:
            drill.run_in_background(started, DURATION)
        full_stats = locust(out, host=EDGE, users=USERS + WS_USERS + MOBILE_USERS, seconds=DURATION,
                            classes=["ApiUser", "RealtimeUser", "MobileSyncUser"], env=locust_env)  # fmt: skip
        aggregated = get_json(f"{ORIGIN}/v1/system/metrics/aggregated")
        hit_rate = edge_hit_rate()
        replica_stats = get_json(f"{ORIGIN}/v1/system/database/replicas/stats")
        say("full path, create+list only (for the baseline ratio)")
        full_cl = locust(out / "full-create-list", host=EDGE, users=BASELINE_USERS, seconds=BASELINE_SECONDS,
                         classes=["CreateListUser"], env=locust_env)  # fmt: skip

        journal = read_journal(journal_path)
        say("audit: the phones finish their queues and pull; the outbox drains; totals verify")
        from django.db import connections

        connections.close_all()  # this process's connection died with the primary's restart
        sync_check = check_sync_clients(journal)
        push_check = push_devices.check(journal, started)
        after_effects = check_after_effects()
    db_check = check_database(journal, started)
    ws_check = check_websockets(journal)

    say("bare path: no idempotency key, no replicas, no metrics, no cache, straight to gunicorn")
    bare_env = {"DJANGO_SETTINGS_MODULE": "bench.bare_settings", "REPLICA_URLS": "", "CDN_PROVIDER": "none"}
    with Servers(**bare_env):
        bare_cl = locust(out / "bare-create-list", host=ORIGIN, users=BASELINE_USERS, seconds=BASELINE_SECONDS,
                         classes=["CreateListUser"], env=locust_env | {"LOADTEST_BARE": "1"})  # fmt: skip

    write_report(out, full_stats=full_stats, full_cl=full_cl, bare_cl=bare_cl, aggregated=aggregated,
                 replica_stats=replica_stats, db_check=db_check | after_effects, ws_check=ws_check,
                 sync_check=sync_check, push_check=push_check, drill=drill, hit_rate=hit_rate)  # fmt: skip


def write_report(out: Path, *, full_stats: Path, full_cl: Path, bare_cl: Path, aggregated: dict, replica_stats: dict,
                 db_check: dict, ws_check: dict, sync_check: dict, push_check: dict, drill: Drill,
                 hit_rate: str) -> None:  # fmt: skip
    stats = read_stats(full_stats)
    lines = [f"# Load test {out.name}", "",
             f"{USERS} API users + {WS_USERS} websocket users + {MOBILE_USERS} phones, {DURATION}s, spawn rate {SPAWN_RATE}/s, "
             f"{ORGS} orgs seeded; machine: {os.cpu_count()} cores.", "",
             "## Endpoints (through the edge)", "",
             "| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    total_requests = total_failures = 0
    for name, row in sorted(stats.items()):
        if row["Name"] == "Aggregated":
            continue
        total_requests += int(row["Request Count"])
        total_failures += int(row["Failure Count"])
        lines.append(f"| {name} | {row['Request Count']} | {row['Failure Count']} | {float(row['Requests/s']):.1f} | "
                     f"{row['50%']} | {row['95%']} | {row['99%']} |")  # fmt: skip
    error_rate = total_failures / total_requests if total_requests else 0
    lines += [
        "",
        f"Error rate (including the fault drill): {error_rate:.4%} of {total_requests} requests.",
        "",
    ]
    lines += ["## Fault drill", "", "| started at (s) | took (s) | step | exit |", "|---:|---:|---|---:|"]
    lines += [f"| {at:.0f} | {took:.1f} | {name} | {code} |" for at, took, name, code in drill.log]
    lines += ["", "## Database check", "", *(f"- {k}: {v}" for k, v in db_check.items())]
    lines += ["", "## Websockets", "", *(f"- {k}: {v}" for k, v in ws_check.items())]
    lines += ["", "## Offline phones (sync)", "", *(f"- {k}: {v}" for k, v in sync_check.items())]
    lines += ["", "## Push notifications (Web Push, local push service)", "",
              *(f"- {k}: {v}" for k, v in push_check.items())]  # fmt: skip
    lines += ["", "## Reads served by replicas", "", replica_share(replica_stats)]
    lines += ["", "## Edge hit rate (Varnish, since the drill restarted it)", "", hit_rate]
    lines += ["", "## The load generator's CPU (it shares the cores with everything it measures)", "",
              *(f"- {Path(run).parent.name}/{Path(run).name}: {figures}" for run, figures in LOAD_GENERATOR_CPU.items())]  # fmt: skip
    lines += ["", "## Service view (GET /v1/system/metrics/aggregated)", "", "```json",
              json.dumps(aggregated, indent=2)[:6000], "```", "",
              "## Replica routing (GET /v1/system/database/replicas/stats)", "", "```json",
              json.dumps(replica_stats, indent=2)[:3000], "```", ""]  # fmt: skip
    full, bare = read_stats(full_cl), read_stats(bare_cl)
    lines += ["## Baseline: bare create and list vs the full path", "",
              "| path | bare req/s | full req/s | full / bare | bare p95 ms | full p95 ms |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for key in sorted(set(full) & set(bare)):
        lines.append(ratio_row(key, full[key], bare[key]))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "value"])
        writer.writerow(["error_rate", f"{error_rate:.6f}"])
        for source in (db_check, ws_check, sync_check, push_check):
            for key, value in source.items():
                writer.writerow([key, value])
    say(f"report: {out / 'report.md'}")
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
