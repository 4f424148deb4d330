"""Benchmark: push notifications under a burst of large expenses (`make bench-push`).

Setup (dev database of the local stack): BENCH_MEMBERS (100) orgs, each with one
manager who has the large-expense alert on (EUR >= 1000) and two Web Push devices
whose endpoints are one local push server (answers 201, records the arrival time).
Real processes: gunicorn (2 workers), the change log's outbox worker, the push worker.

In one run, interleaved over BENCH_ROUNDS rounds:
- "push off": a burst of BENCH_EXPENSES (1000) large expenses, alerts switched off
  (fan-out finds no one): the write path's latency without push work;
- "push on": the same burst with alerts on: write latency, and for every notification
  the time from its expense's commit (the row's created_at, a little before the commit:
  the figure is, if anything, pessimistic) to its arrival at the push server, decrypted
  and matched by expense id;
- "drain": the same burst with the push worker stopped, then started: how fast one
  worker empties a full queue (sends per second, nothing else competing).
The client sends the burst from BENCH_CLIENTS (16) threads with keep-alive, first as
fast as the server answers (a saturating burst: every process of the pipeline competes
with the writes for the two cores, so notifications queue behind the burst), then paced
at BENCH_RATE writes per second (60: well under this machine's saturation, the regime
the latency goal is about), off and on each time. Each notification's time is split
into its stages from its delivery row: commit -> fan-out (the row's creation), fan-out
-> claim by the push worker, claim -> arrival.
"""

import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import django
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.conf import settings

from accounts.models import User
from accounts.tokens import token_issue
from bench.process_cpu import tree_cpu_seconds
from changelog.models import OutboxEntry
from push.models import Delivery, Device
from push.services import preference_set
from tenancy.models import Membership, Organization, Property
from tenancy.roles import Role
from tests.live_server import free_port, wait_until_up
from tests.push_servers import Http1PushServer
from tests.push_support import Browser

MEMBERS = int(os.environ.get("BENCH_MEMBERS", "100"))
EXPENSES = int(os.environ.get("BENCH_EXPENSES", "1000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
RATE = float(os.environ.get("BENCH_RATE", "60"))
DEVICES_PER_MEMBER = 2
OUTBOX_WORKER = ["manage.py", "outbox_worker"]
PUSH_WORKER = ["manage.py", "push_worker"]

logging.getLogger("httpx").setLevel(logging.WARNING)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Tenant:
    def __init__(self, server: Http1PushServer, run: str, n: int) -> None:
        user = User.objects.create_user(username=f"bench-push-{run}-{n}")  # no password: no hashing cost
        self.org = Organization.objects.create(name=f"Bench push {run} {n}")
        Membership.objects.create(org=self.org, user=user, role=Role.MANAGER)
        self.property = Property.objects.create(org=self.org, name="Hotel", currency="EUR", timezone="UTC")
        _, self.token = token_issue(user=user)
        self.user = user
        self.browsers = [Browser(f"{server.url}/push/{run}/{n}/{d}") for d in range(DEVICES_PER_MEMBER)]
        for browser in self.browsers:
            Device.objects.create(
                user=user,
                kind="webpush",
                address=browser.endpoint,
                p256dh=browser.subscription["keys"]["p256dh"],
                auth=browser.subscription["keys"]["auth"],
            )

    def alerts(self, enabled: bool) -> None:
        # Through the service, as the API does: switching the alert on ends the org's
        # quiet period (docs/changelog.md "Quiet orgs"), which a bare ORM write would not.
        preference_set(
            org=self.org,
            user=self.user,
            large_expense_enabled=enabled,
            thresholds={"EUR": Decimal("1000.00")},
            sync=True,
        )


def process(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *command], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@contextmanager
def running(command: list[str], env: dict[str, str]):
    proc = process(command, env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def burst(base_url: str, tenants: list[Tenant], rate: float | None = None) -> list[tuple[float, dict]]:
    """EXPENSES POSTs round-robin over the tenants, as fast as answered or, with `rate`,
    the i-th sent at start + i / rate (open loop); (latency, created expense) each."""
    local = threading.local()
    start = time.perf_counter() + 0.1

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, timeout=30)
        return local.client

    def one(i: int) -> tuple[float, dict]:
        tenant = tenants[i % len(tenants)]
        body = {
            "property_id": str(tenant.property.id),
            "amount": f"{1000 + i}.00",
            "currency": "EUR",
            "category": "renovation",
            "occurred_on": "2026-11-30",
        }
        if rate is not None:
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        started = time.perf_counter()
        response = client().post(
            f"/v1/orgs/{tenant.org.id}/expenses",
            json=body,
            headers={"Authorization": f"Token {tenant.token}"},
        )
        elapsed = time.perf_counter() - started
        if response.status_code != 201:
            raise SystemExit(f"write failed: {response.status_code} {response.text[:200]}")
        return elapsed, response.json()

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(EXPENSES)))


def receipts(server: Http1PushServer, tenants: list[Tenant], since: int) -> list[tuple[float, str]]:
    """(arrival time, expense id) of every notification received after index `since`."""
    by_endpoint = {b.endpoint.removeprefix(server.url): b for t in tenants for b in t.browsers}
    found = []
    for request in server.requests[since:]:
        browser = by_endpoint[request.path]
        found.append((request.received_at, browser.decrypt(request.body)["expense_id"]))
    return found


def outbox_drained(tenants: list[Tenant]) -> None:
    orgs = [t.org.id for t in tenants]
    wait_for(lambda: not OutboxEntry.objects.filter(org_id__in=orgs).exists())


def wait_for(predicate, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the notifications")
        time.sleep(0.05)


@dataclass
class Phase:
    """One way of sending the burst (saturating or paced): its figures over the rounds."""

    rate: float | None
    write_off: list[float] = field(default_factory=list)
    write_on: list[float] = field(default_factory=list)
    commit_to_receipt: list[float] = field(default_factory=list)
    commit_to_fanout: list[float] = field(default_factory=list)
    fanout_to_claim: list[float] = field(default_factory=list)
    claim_to_receipt: list[float] = field(default_factory=list)
    send_rates: list[float] = field(default_factory=list)


@dataclass
class Figures:
    phases: list[Phase] = field(default_factory=lambda: [Phase(rate=None), Phase(rate=RATE)])
    drain_rates: list[float] = field(default_factory=list)
    cpu_ms_per_send: list[float] = field(default_factory=list)
    fanout_cpu_ms: list[float] = field(default_factory=list)


def round_off_then_on(
    base_url: str,
    env: dict,
    server: Http1PushServer,
    tenants: list[Tenant],
    figures: Figures,
    *,
    phase: Phase,
    outbox: subprocess.Popen,
) -> None:
    expected = EXPENSES * DEVICES_PER_MEMBER
    with running(PUSH_WORKER, env):
        time.sleep(1.0)
        for tenant in tenants:
            tenant.alerts(False)
        phase.write_off += [latency for latency, _ in burst(base_url, tenants, phase.rate)]
        outbox_drained(tenants)  # the fan-out of the "off" burst reads the preferences
        for tenant in tenants:
            tenant.alerts(True)
        before = len(server.requests)
        outbox_cpu = tree_cpu_seconds(outbox.pid)
        results = burst(base_url, tenants, phase.rate)
        phase.write_on += [latency for latency, _ in results]
        wait_for(lambda: len(server.requests) >= before + expected)
        figures.fanout_cpu_ms.append((tree_cpu_seconds(outbox.pid) - outbox_cpu) * 1000 / EXPENSES)
    created = {e["id"]: datetime.fromisoformat(e["created_at"]).timestamp() for _, e in results}
    arrived = receipts(server, tenants, before)
    phase.commit_to_receipt += [at - created[expense_id] for at, expense_id in arrived]
    first, last = min(a for a, _ in arrived), max(a for a, _ in arrived)
    phase.send_rates.append(len(arrived) / max(last - first, 1e-9))
    stages(phase, tenants, created, arrived)


def stages(phase: Phase, tenants: list[Tenant], created: dict[str, float], arrived: list) -> None:
    """Split each notification's time by its delivery row's timestamps."""
    arrival: dict[str, list[float]] = {}
    for at, expense_id in arrived:
        arrival.setdefault(expense_id, []).append(at)
    rows = Delivery.objects.filter(
        org_id__in=[t.org.id for t in tenants], event_key__in=[f"expense.large:{e}" for e in created]
    ).values_list("event_key", "created_at", "claimed_at")
    for event_key, fanned_out, claimed in rows:
        expense_id = event_key.removeprefix("expense.large:")
        phase.commit_to_fanout.append(fanned_out.timestamp() - created[expense_id])
        if claimed is not None:
            phase.fanout_to_claim.append(claimed.timestamp() - fanned_out.timestamp())
            phase.claim_to_receipt += [at - claimed.timestamp() for at in arrival.get(expense_id, [])[:1]]


def round_drain(
    base_url: str, env: dict, server: Http1PushServer, tenants: list[Tenant], figures: Figures
) -> None:
    """Queue a full burst with no push worker running, then start one."""
    expected = EXPENSES * DEVICES_PER_MEMBER
    queued_before = Delivery.objects.count()
    burst(base_url, tenants)
    wait_for(lambda: Delivery.objects.count() >= queued_before + expected)
    before = len(server.requests)
    with running(PUSH_WORKER, env) as worker:
        wait_for(lambda: len(server.requests) >= before + 1)
        cpu_at_first = tree_cpu_seconds(worker.pid)  # start-up excluded
        wait_for(lambda: len(server.requests) >= before + expected)
        figures.cpu_ms_per_send.append((tree_cpu_seconds(worker.pid) - cpu_at_first) * 1000 / (expected - 1))
    arrivals = [r.received_at for r in server.requests[before:]]
    # from the first send to the last: the worker's start-up is not part of it
    figures.drain_rates.append((len(arrivals) - 1) / max(max(arrivals) - min(arrivals), 1e-9))


def report(figures: Figures) -> None:
    def line(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (
            f"{name:<34} n={len(ms):>5}  p50={percentile(ms, 50):7.1f} ms  p95={percentile(ms, 95):7.1f} ms"
            f"  p99={percentile(ms, 99):7.1f} ms"
        )

    print()
    print(
        f"push benchmark: {EXPENSES} large expenses per burst over {MEMBERS} members x {DEVICES_PER_MEMBER} "
        f"devices, {CLIENTS} client threads, {ROUNDS} rounds, load avg {os.getloadavg()[0]:.2f} (shared machine)"
    )
    for phase in figures.phases:
        print()
        print(
            "saturating burst (as fast as answered)"
            if phase.rate is None
            else f"paced at {phase.rate:g} writes/s"
        )
        print(line("write latency, push off", phase.write_off))
        print(line("write latency, push on", phase.write_on))
        off95, on95 = percentile(phase.write_off, 95), percentile(phase.write_on, 95)
        print(f"{'write p95 on / off':<34} {on95 / off95:.2f}x")
        print(line("commit -> receipt (push on)", phase.commit_to_receipt))
        print(line("  commit -> fan-out row", phase.commit_to_fanout))
        print(line("  fan-out row -> claimed", phase.fanout_to_claim))
        print(line("  claimed -> receipt", phase.claim_to_receipt))
        print(f"{'sends/s':<34} {statistics.median(phase.send_rates):.0f} (median of rounds)")
    print()
    print(f"{'sends/s draining a full queue':<34} {statistics.median(figures.drain_rates):.0f} (one worker)")
    cpu = statistics.median(figures.cpu_ms_per_send)
    print(f"{'push worker CPU per send':<34} {cpu:.2f} ms (so {1000 / cpu:.0f} sends/s per free core)")
    fanout = statistics.median(figures.fanout_cpu_ms)
    print(
        f"{'outbox worker CPU per change':<34} {fanout:.2f} ms (fan-out + delete; {1000 / fanout:.0f} changes/s per core)"
    )


def main() -> None:
    run = uuid.uuid4().hex[:6]
    figures = Figures()
    with ExitStack() as stack:
        server = stack.enter_context(Http1PushServer(201))
        print(f"setting up {MEMBERS} orgs x 1 member x {DEVICES_PER_MEMBER} Web Push devices ...", flush=True)
        tenants = [Tenant(server, run, n) for n in range(MEMBERS)]
        port = free_port()
        env = os.environ | {
            "ACCESS_LOG": "",
            "REST_PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "WEB_MAX_REQUESTS": "0",
            "LOG_LEVEL": "WARNING",
            "PUSH_WEBPUSH_ALLOWED_HOSTS": ",".join([*settings.PUSH_WEBPUSH_ALLOWED_HOSTS, "127.0.0.1"]),
        }
        gunicorn = stack.enter_context(
            running(["-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"], env)
        )
        base_url = f"http://127.0.0.1:{port}"
        wait_until_up(base_url, gunicorn)
        outbox = stack.enter_context(running(OUTBOX_WORKER, env))
        for round_number in range(ROUNDS):
            for phase in figures.phases:
                round_off_then_on(base_url, env, server, tenants, figures, phase=phase, outbox=outbox)
            round_drain(base_url, env, server, tenants, figures)
            print(f"round {round_number + 1}/{ROUNDS} done", flush=True)
    report(figures)


if __name__ == "__main__":
    main()
