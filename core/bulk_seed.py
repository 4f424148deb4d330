"""Bulk-create tenants for load tests with COPY: orgs, properties, users, tokens,
memberships and finance entries, in batches of orgs, each batch one transaction.

The per-day totals of the seeded entries (the summary's read model) are summed while
the rows are generated and copied with them, in the same transaction.

Fast by construction: rows are generated in Python as COPY text and streamed with
psycopg's COPY protocol (no ORM objects, no per-row INSERT), and every generated user
shares one password hash (hashing 500 000 passwords would take hours). Each user gets
an API token derived from SECRET_KEY and its username (HMAC-SHA256), stored like any
token as its SHA-512 digest (fast, unlike a password hash); the credentials CSV
derives the same tokens again, since the database holds no usable token. Re-runnable:
seeded orgs are numbered by their owner's username (`{prefix}-o{n}-u0`); a re-run
continues after the highest number already present, so nothing is created twice.
"""

import csv
import datetime
import hashlib
import hmac
import io
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.utils import timezone
from knox.crypto import hash_token
from knox.settings import CONSTANTS

from core.ids import uuid7

CURRENCIES = ("EUR", "USD", "GBP", "CHF")
CATEGORIES = ("laundry", "food", "energy", "payroll", "maintenance", "rooms", "bar", "spa")


@dataclass(frozen=True)
class SeedPlan:
    orgs: int
    properties_per_org: int
    users_per_org: int
    entries_per_property: int
    prefix: str
    password: str
    batch_orgs: int = 2000


def _copy_text(value: object) -> str:
    if value is None:
        return r"\N"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


class _CopyBuffer:
    """Rows of one table, rendered as COPY text."""

    def __init__(self, table: str, columns: tuple[str, ...]) -> None:
        self.table, self.columns = table, columns
        self.buffer = io.StringIO()
        self.rows = 0

    def add(self, *values: object) -> None:
        self.buffer.write("\t".join(_copy_text(v) for v in values))
        self.buffer.write("\n")
        self.rows += 1

    def flush(self, cursor: object) -> None:
        if not self.rows:
            return
        sql = f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN"
        with cursor.copy(sql) as copy:  # type: ignore[attr-defined]
            copy.write(self.buffer.getvalue())


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def seeded_org_count(prefix: str) -> int:
    """How many orgs a previous run with this prefix created (the next number to use)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT max(substring(username from %s)::int) FROM accounts_user WHERE username LIKE %s",
            [rf"^{prefix}-o(\d+)-u0$", f"{prefix}-o%-u0"],
        )
        (highest,) = cursor.fetchone()
    return 0 if highest is None else highest + 1


def seed_token(username: str) -> str:
    """The API token of a seeded user: 64 hex digits, reproducible from SECRET_KEY."""
    message = f"seed-token:{username}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


def _batches(start: int, stop: int, size: int) -> Iterator[range]:
    for first in range(start, stop, size):
        yield range(first, min(first + size, stop))


def seed(plan: SeedPlan, progress: Callable[[int], None]) -> int:
    """Create orgs numbered from where a previous run stopped up to `plan.orgs`.

    Returns how many orgs were created; calls `progress(n)` after each batch.
    """
    start = seeded_org_count(plan.prefix)
    password_hash = make_password(plan.password)
    rng = random.Random(os.urandom(8))  # noqa: S311 (fake amounts, not secrets)
    today = datetime.date.today()
    created = 0
    for batch in _batches(start, plan.orgs, plan.batch_orgs):
        _seed_batch(plan, batch, password_hash, rng, today)
        created += len(batch)
        progress(len(batch))
    return created


def _seed_batch(
    plan: SeedPlan, batch: range, password_hash: str, rng: random.Random, today: datetime.date
) -> None:
    now = timezone.now().isoformat()
    expiry = (timezone.now() + datetime.timedelta(seconds=settings.AUTH_TOKEN_TTL_SECONDS)).isoformat()
    orgs = _CopyBuffer("tenancy_organization", ("id", "name", "created_at"))
    counters = _CopyBuffer("org_changes", ("org_id", "version", "epoch", "pruned_through"))
    # The seed writes one database (`default`, the directory cluster's): its orgs live there.
    placements = _CopyBuffer("org_directory", ("org_id", "cluster", "state", "generation", "updated_at"))
    users = _CopyBuffer(
        "accounts_user",
        ("id", "password", "is_superuser", "username", "first_name", "last_name", "email", "is_staff",
         "is_active", "date_joined"),
    )  # fmt: skip
    tokens = _CopyBuffer("knox_authtoken", ("digest", "token_key", "created", "expiry", "user_id"))
    members = _CopyBuffer("tenancy_membership", ("id", "org_id", "user_id", "role", "created_at"))
    properties = _CopyBuffer(
        "tenancy_property", ("id", "org_id", "name", "currency", "timezone", "created_at")
    )
    entry_columns = ("id", "org_id", "property_id", "amount", "currency", "category", "description",
                     "occurred_on", "created_by_id", "created_at", "updated_at")  # fmt: skip
    expenses = _CopyBuffer("finance_expense", entry_columns)
    revenues = _CopyBuffer("finance_revenue", entry_columns)
    # The summary's per-day totals of the rows above (finance.totals), in cents.
    daily: dict[tuple[object, ...], list[int]] = defaultdict(lambda: [0, 0])
    roles = ("owner", "manager", "viewer")

    for n in batch:
        org_id = uuid7()
        orgs.add(org_id, f"{plan.prefix} hotel group {n}", now)
        counters.add(org_id, 0, "1", 0)  # seeded rows are version 0: the org's first state
        placements.add(org_id, settings.DIRECTORY_CLUSTER, "active", 1, now)
        user_ids = []
        for u in range(plan.users_per_org):
            user_id = uuid7()
            user_ids.append(user_id)
            username = f"{plan.prefix}-o{n}-u{u}"
            users.add(user_id, password_hash, False, username, "", "", "", False, True, now)
            token = seed_token(username)
            tokens.add(hash_token(token), token[: CONSTANTS.TOKEN_KEY_LENGTH], now, expiry, user_id)
            members.add(uuid7(), org_id, user_id, roles[min(u, 2)], now)
        for p in range(plan.properties_per_org):
            property_id = uuid7()
            currency = CURRENCIES[(n + p) % len(CURRENCIES)]
            properties.add(property_id, org_id, f"Hotel {n}-{p}", currency, "UTC", now)
            for e in range(plan.entries_per_property):
                kind, target = ("expense", expenses) if e % 2 == 0 else ("revenue", revenues)
                cents = rng.randint(100, 500_000)
                occurred_on = (today - datetime.timedelta(days=rng.randint(0, 364))).isoformat()
                target.add(uuid7(), org_id, property_id, _money(cents), currency, rng.choice(CATEGORIES), "",
                           occurred_on, user_ids[0], now, now)  # fmt: skip
                total = daily[(org_id, occurred_on, property_id, currency, kind)]
                total[0] += cents
                total[1] += 1
    totals = _CopyBuffer(
        "finance_daily_total", ("org_id", "day", "property_id", "currency", "kind", "total", "count")
    )
    for key, (cents, count) in daily.items():
        totals.add(*key, _money(cents), count)

    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper, for COPY
        for buffer in (
            orgs,
            placements,
            counters,
            users,
            tokens,
            members,
            properties,
            expenses,
            revenues,
            totals,
        ):
            buffer.flush(raw)


def write_credentials_csv(prefix: str, path: str, password: str) -> int:
    """One row per seeded user: org_id,username,password,token,property_ids (space-separated)."""
    query = """
        SELECT m.org_id, u.username,
               (SELECT string_agg(p.id::text, ' ' ORDER BY p.id) FROM tenancy_property p
                 WHERE p.org_id = m.org_id)
        FROM accounts_user u
        JOIN tenancy_membership m ON m.user_id = u.id
        WHERE u.username LIKE %s
        ORDER BY u.username
    """
    rows = 0
    with open(path, "w", newline="") as out, transaction.atomic(), connection.chunked_cursor() as cursor:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["org_id", "username", "password", "token", "property_ids"])
        cursor.execute(query, [f"{prefix}-o%"])
        while batch := cursor.fetchmany(5000):
            for org_id, username, property_ids in batch:
                writer.writerow([org_id, username, password, seed_token(username), property_ids or ""])
            rows += len(batch)
    return rows
