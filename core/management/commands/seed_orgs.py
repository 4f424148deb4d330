"""Bulk-create tenants for load tests (CONTRACT §9).

    manage.py seed_orgs --orgs 100000 --properties-per-org 5 --users-per-org 5 \
        [--entries-per-property 2] [--credentials-out creds.csv] [--prefix lt]

Safe to re-run: it continues after the orgs a previous run with the same prefix made.
"""

import re
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.bulk_seed import SeedPlan, seed, seeded_org_count, write_credentials_csv


class Command(BaseCommand):
    help = "Bulk-create organizations with properties, users (with tokens) and entries for load tests."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--orgs", type=int, required=True, help="total orgs wanted for this prefix")
        parser.add_argument("--properties-per-org", type=int, default=5)
        parser.add_argument("--users-per-org", type=int, default=5)
        parser.add_argument(
            "--entries-per-property", type=int, default=0, help="alternately expense, revenue"
        )
        parser.add_argument("--credentials-out", help="CSV: org_id,username,password,token,property_ids")
        parser.add_argument("--prefix", default="lt", help="username prefix, [a-z0-9]+ (default lt)")
        parser.add_argument("--password", default="loadtest-password", help="shared by every seeded user")
        parser.add_argument("--batch-orgs", type=int, default=2000, help="orgs per transaction")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = options["prefix"]
        if not re.fullmatch(r"[a-z0-9]+", prefix):
            raise CommandError("--prefix must be lowercase letters and digits")
        for name in ("orgs", "properties_per_org", "users_per_org", "entries_per_property"):
            if options[name] < 0:
                raise CommandError(f"--{name.replace('_', '-')} must not be negative")
        if options["users_per_org"] < 1:
            raise CommandError("--users-per-org must be at least 1 (the first user owns the org)")
        plan = SeedPlan(
            orgs=options["orgs"],
            properties_per_org=options["properties_per_org"],
            users_per_org=options["users_per_org"],
            entries_per_property=options["entries_per_property"],
            prefix=prefix,
            password=options["password"],
            batch_orgs=max(1, options["batch_orgs"]),
        )
        already = seeded_org_count(prefix)
        todo = max(0, plan.orgs - already)
        self.stdout.write(f"{already} orgs with prefix '{prefix}' exist; creating {todo}.")
        started = time.monotonic()
        done = 0

        def progress(batch: int) -> None:
            nonlocal done
            done += batch
            elapsed = time.monotonic() - started
            rate = done / elapsed if elapsed else 0
            eta = (todo - done) / rate if rate else 0
            width = 30
            filled = int(width * done / todo) if todo else width
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{todo} orgs  {rate:,.0f}/s  eta {eta:,.0f}s "
            )
            sys.stderr.flush()

        created = seed(plan, progress)
        if todo:
            sys.stderr.write("\n")
        elapsed = time.monotonic() - started
        self.stdout.write(f"created {created} orgs in {elapsed:.1f}s")
        if options["credentials_out"]:
            rows = write_credentials_csv(prefix, options["credentials_out"], plan.password)
            self.stdout.write(f"wrote {rows} credentials to {options['credentials_out']}")
