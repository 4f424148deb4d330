"""Send the edge purges that are waiting in the durable queue.

    manage.py cdn_purge_retry              # one pass (cron: every minute)
    manage.py cdn_purge_retry --watch 5    # a pass every 5 s until stopped (sidecar)

Exit status: 0 when the queue is empty afterwards, 1 when purges are still waiting.
"""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from edgecache.queue import purge_queue_retry


class Command(BaseCommand):
    help = "Retry queued edge-cache purges (see docs/edge-cache.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS")
        parser.add_argument("--limit", type=int, default=500, help="rows per pass (default 500)")

    def handle(self, *args: Any, watch: float | None, limit: int, **options: Any) -> None:
        while True:
            result = purge_queue_retry(limit=limit)
            self.stdout.write(f"sent={result.sent} failed={result.failed} waiting={result.left}")
            if watch is None:
                if result.left:
                    raise SystemExit(1)
                return
            time.sleep(watch)
