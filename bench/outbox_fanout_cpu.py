"""Benchmark: the outbox worker's CPU per change running the push fan-out
(`make bench-outbox-fanout`; figures in docs/push.md "Fan-out cost").

Setup (dev database of the local stack): BENCH_ORGS (100) orgs, each with one manager
whose large-expense alert is on (EUR >= 1000) and who has two Web Push devices; then
BENCH_EXPENSES (1000) large expenses, round-robin over the orgs, written through the
finance service (so each leaves the outbox row a real write leaves, handed to the
worker). No worker process runs meanwhile.

Measured: this process drains them with the worker's own `drain_once` (claims of
BENCH_BATCH (100) rows): CPU seconds of this process (`time.process_time`, which the
neighbours' load moves much less than wall-clock), statements sent, wall-clock. The
database server's CPU is not in the figure. Checked: every expense got exactly one
delivery per device. BENCH_ROUNDS (3) rounds, each on fresh rows.
"""

import os
import statistics
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.db import connection

from accounts.models import User
from changelog.models import OutboxEntry
from changelog.worker import drain_once
from finance.models import Expense
from finance.services import entry_create
from push.models import Delivery, Device
from push.services import preference_set
from tenancy.models import Membership, Organization, Property
from tenancy.roles import Role

ORGS = int(os.environ.get("BENCH_ORGS", "100"))
EXPENSES = int(os.environ.get("BENCH_EXPENSES", "1000"))
BATCH = int(os.environ.get("BENCH_BATCH", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DEVICES_PER_MEMBER = 2


def setup(run: str) -> list[tuple[Organization, Property, User]]:
    orgs = []
    for n in range(ORGS):
        user = User.objects.create_user(username=f"bench-fanout-{run}-{n}")
        org = Organization.objects.create(name=f"Bench fan-out {run} {n}")
        Membership.objects.create(org=org, user=user, role=Role.MANAGER)
        prop = Property.objects.create(org=org, name="Hotel", currency="EUR", timezone="UTC")
        for d in range(DEVICES_PER_MEMBER):
            Device.objects.create(user=user, kind="webpush", address=f"http://127.0.0.1:9/push/{run}/{n}/{d}",
                                  p256dh="x", auth="y")  # fmt: skip
        preference_set(org=org, user=user, large_expense_enabled=True,
                       thresholds={"EUR": Decimal("1000.00")}, sync=True)  # fmt: skip
        orgs.append((org, prop, user))
    return orgs


def write_expenses(orgs: list[tuple[Organization, Property, User]]) -> None:
    for i in range(EXPENSES):
        org, prop, user = orgs[i % len(orgs)]
        entry_create(model=Expense, org=org, created_by=user, property_id=prop.id, amount=Decimal(f"{1000 + i}.00"),
                     currency="EUR", category="renovation", occurred_on=date(2026, 11, 30))  # fmt: skip


def cleanup(orgs: list[tuple[Organization, Property, User]]) -> None:
    org_ids = [org.id for org, _, _ in orgs]
    Delivery.objects.filter(org_id__in=org_ids).delete()
    OutboxEntry.objects.filter(org_id__in=org_ids).delete()
    Device.objects.filter(user__in=[user for _, _, user in orgs]).update(active=False)  # the orgs stay


def drain() -> tuple[float, float, int, int]:
    """(CPU s, wall s, statements, changes delivered) to empty the outbox."""
    statements = 0

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    delivered = 0
    with connection.execute_wrapper(count):
        cpu, wall = time.process_time(), time.perf_counter()
        while (result := drain_once(database="default", batch_size=BATCH)).claimed:
            delivered += result.delivered
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu, wall, statements, delivered


def main() -> None:
    assert not OutboxEntry.objects.exists(), "the outbox is not empty: stop the workers first"
    per_change_ms, per_change_wall, per_change_statements = [], [], []
    for r in range(ROUNDS):
        run = f"{os.getpid()}-{r}"
        orgs = setup(run)
        try:
            write_expenses(orgs)
            cpu, wall, statements, delivered = drain()
            assert delivered == EXPENSES, delivered
            created = Delivery.objects.filter(org_id__in=[org.id for org, _, _ in orgs]).count()
            assert created == EXPENSES * DEVICES_PER_MEMBER, created
        finally:
            cleanup(orgs)
        per_change_ms.append(cpu / EXPENSES * 1000)
        per_change_wall.append(wall / EXPENSES * 1000)
        per_change_statements.append(statements / EXPENSES)
        print(f"round {r + 1}: {EXPENSES} changes, CPU {cpu:.2f} s ({per_change_ms[-1]:.3f} ms/change), "
              f"wall {wall:.2f} s, {statements} statements ({per_change_statements[-1]:.2f}/change)")  # fmt: skip
    print(f"median: CPU {statistics.median(per_change_ms):.3f} ms/change, "
          f"wall {statistics.median(per_change_wall):.3f} ms/change, "
          f"{statistics.median(per_change_statements):.2f} statements/change; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip


if __name__ == "__main__":
    main()
