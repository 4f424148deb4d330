"""`manage.py outbox_status [--json] [--requeue-dead]`: what waits in the outbox.

Exit 0 when nothing is dead and the oldest pending change is younger than
CHANGELOG_ALERT_AGE_SECONDS; 1 otherwise (for cron and runbooks).
"""

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from changelog.selectors import outbox_status
from replicas.topology import topology


class Command(BaseCommand):
    help = "Show the outbox: pending and dead-lettered changes, the oldest pending age."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true")
        parser.add_argument(
            "--requeue-dead", action="store_true", help="give dead-lettered changes a new round of attempts"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report: dict[str, Any] = {}
        unhealthy = False
        for database in sorted(topology().primaries):
            if options["requeue_dead"]:
                with connections[database].cursor() as cursor:
                    cursor.execute(
                        "UPDATE changelog_outbox SET state = 'pending', attempts = 0, available_at = clock_timestamp() "
                        "WHERE state = 'dead'"
                    )
                    self.stderr.write(f"{database}: requeued {cursor.rowcount} dead change(s)")
            status = outbox_status(database=database)
            report[database] = {
                "pending": status.pending,
                "dead": status.dead,
                "oldest_pending_age_seconds": round(status.oldest_pending_age_seconds, 3),
                "by_topic": status.by_topic,
            }
            unhealthy = unhealthy or status.dead > 0
            unhealthy = unhealthy or status.oldest_pending_age_seconds > settings.CHANGELOG_ALERT_AGE_SECONDS
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            for database, row in report.items():
                topics = ", ".join(f"{t}: {n}" for t, n in row["by_topic"].items()) or "-"
                self.stdout.write(
                    f"{database}: pending {row['pending']}, dead {row['dead']}, "
                    f"oldest pending {row['oldest_pending_age_seconds']} s; by topic: {topics}"
                )
        if unhealthy:
            raise SystemExit(1)
