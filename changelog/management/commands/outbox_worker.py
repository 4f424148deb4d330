"""`manage.py outbox_worker`: deliver the changes the request threads could not.

Run one or more (they share the outbox with SKIP LOCKED); `bin/serve` supervises one.
"""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from changelog.shutdown import install_stop_handlers
from changelog.worker import run_worker
from replicas.topology import topology


class Command(BaseCommand):
    help = "Deliver undelivered org changes (edge purge, realtime events, push) from the outbox."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--poll",
            type=float,
            default=None,
            help="seconds between polls of an empty outbox (CHANGELOG_WORKER_POLL_SECONDS)",
        )
        parser.add_argument("--batch-size", type=int, default=100)
        parser.add_argument("--stop-after", type=float, default=None, help="exit after this many seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        install_stop_handlers()
        databases = sorted(topology().primaries)
        poll = options["poll"] if options["poll"] is not None else settings.CHANGELOG_WORKER_POLL_SECONDS
        self.stdout.write(f"outbox worker: draining {', '.join(databases)} every {poll:g} s when idle")
        self.stdout.flush()
        run_worker(
            databases=databases,
            poll_seconds=poll,
            batch_size=options["batch_size"],
            stop_after=options["stop_after"],
        )
        self.stdout.write("outbox worker: stopped")
