from typing import Any

from django.core.management.base import BaseCommand

from accounts.tokens import tokens_purge_expired


class Command(BaseCommand):
    help = "Delete expired API tokens in short batches (safe while serving; cron daily)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=5000)

    def handle(self, *args: Any, batch_size: int, **options: Any) -> None:
        deleted = tokens_purge_expired(batch_size=batch_size)
        self.stdout.write(f"deleted {deleted} expired tokens")
