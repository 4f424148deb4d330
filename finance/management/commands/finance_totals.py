"""Check or repair the per-day totals behind the finance summary (CONTRACT §9, §12).

    manage.py finance_totals verify [--org ID]   # exit 0: every total equals its rows; 1: lists each key
    manage.py finance_totals rebuild [--org ID]  # repairs differing keys while the service runs

Each org is verified in its own REPEATABLE READ snapshot on its own cluster; rebuild
repairs key by key under the org's counter lock (finance.totals_repair).
"""

import time
import uuid
from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from directory.models import OrgPlacement
from finance.totals import TotalKey
from finance.totals_repair import OrgRebuild, org_totals_rebuild, org_totals_verify
from replicas.context import use_org_cluster

PROGRESS_EVERY_SECONDS = 2.0


class Command(BaseCommand):
    help = "Verify (exit 1 on any difference) or rebuild the finance summary's per-day totals."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["verify", "rebuild"])
        parser.add_argument("--org", type=uuid.UUID, help="only this org (default: every org)")

    def handle(self, *args: Any, **options: Any) -> None:
        orgs = self._orgs(options["org"])
        if options["action"] == "verify":
            self._verify(orgs)
        else:
            self._rebuild(orgs)

    def _orgs(self, org_id: uuid.UUID | None) -> list[uuid.UUID]:
        # Every cluster's orgs: the directory knows them all.
        if org_id is not None:
            if not OrgPlacement.objects.filter(org_id=org_id).exists():
                raise CommandError(f"no organization {org_id}")
            return [org_id]
        return list(OrgPlacement.objects.order_by("org_id").values_list("org_id", flat=True))

    def _each(self, orgs: list[uuid.UUID], verb: str) -> Iterator[uuid.UUID]:
        """The orgs, each with its cluster selected; a progress line every few seconds."""
        started = last = time.monotonic()
        for done, org_id in enumerate(orgs):
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_SECONDS:
                self.stderr.write(f"{verb} {done}/{len(orgs)} orgs ({now - started:.0f} s)")
                last = now
            with use_org_cluster(org_id):
                yield org_id

    def _verify(self, orgs: list[uuid.UUID]) -> None:
        differing = 0
        for org_id in self._each(orgs, "verified"):
            for mismatch in org_totals_verify(org_id=org_id):
                differing += 1
                self.stdout.write(f"differs: {mismatch.describe()}")
        if differing:
            self.stdout.write(f"{differing} total(s) differ from their rows in {len(orgs)} org(s)")
            raise SystemExit(1)
        self.stdout.write(f"ok: every total equals its rows in {len(orgs)} org(s)")

    def _rebuild(self, orgs: list[uuid.UUID]) -> None:
        repaired = pruned = 0

        def report(progress: OrgRebuild, key: TotalKey) -> None:
            done = progress.repaired + progress.pruned
            if done % 100 == 0:
                self.stderr.write(f"org {progress.org_id}: {done} keys rebuilt")

        for org_id in self._each(orgs, "rebuilt"):
            result = org_totals_rebuild(org_id=org_id, on_key=report)
            if result.repaired:
                self.stdout.write(f"org {org_id}: {result.repaired} total(s) repaired")
            repaired += result.repaired
            pruned += result.pruned
        self.stdout.write(
            f"rebuilt {len(orgs)} org(s): {repaired} total(s) repaired, {pruned} empty total(s) pruned"
        )
