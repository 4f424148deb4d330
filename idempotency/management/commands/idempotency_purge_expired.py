"""Delete expired idempotency records, a batch per short transaction.

Run it from cron, e.g. hourly: `python manage.py idempotency_purge_expired`. Expired
records are already ignored by lookups, so how often it runs only bounds table size.
"""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from idempotency.services import idempotency_records_delete_expired


class Command(BaseCommand):
    help = "Delete expired idempotency records in batches (safe to run while serving)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=5000, help="rows per transaction (5000)")
        parser.add_argument(
            "--max-batches", type=int, default=0, help="stop after this many batches (0: until none left)"
        )
        parser.add_argument("--pause", type=float, default=0.0, help="seconds to sleep between batches")

    def handle(self, *args: Any, batch_size: int, max_batches: int, pause: float, **options: Any) -> None:
        batch_size = max(batch_size, 1)
        total = batches = 0
        while True:
            deleted = idempotency_records_delete_expired(batch_size=batch_size)
            total += deleted
            if deleted:
                batches += 1
            if deleted < batch_size or (max_batches and batches >= max_batches):
                break
            if pause:
                time.sleep(pause)
        self.stdout.write(f"deleted {total} expired idempotency records in {batches} batches")
