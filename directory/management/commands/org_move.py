"""Move an org to another database cluster while the service runs (CONTRACT §9, §13).

    manage.py org_move ORG_ID --to CLUSTER [--keep-source]

Prints each step (copy per table, catch-up rounds, fence, verification, flip) and a
summary line; exit 1 when the move stopped (the org then stays where it was).
"""

import time
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from directory.moves import MoveError, OrgMove
from replicas.topology import OrgNotRouted


class Command(BaseCommand):
    help = "Move an org to another database cluster: copy, catch up, fence, verify, flip."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("org_id", type=uuid.UUID)
        parser.add_argument(
            "--to", required=True, dest="target", help="the cluster's name (DATABASE_CLUSTERS)"
        )
        parser.add_argument(
            "--keep-source", action="store_true", help="leave the old copy in place (its writes stay refused)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()

        def progress(line: str) -> None:
            self.stdout.write(f"[{time.monotonic() - started:7.2f}s] {line}")
            self.stdout.flush()

        try:
            move = OrgMove(
                org_id=options["org_id"], target=options["target"], progress=progress,
                clean_source=not options["keep_source"],
            )  # fmt: skip
            report = move.run()
        except (MoveError, OrgNotRouted) as exc:
            raise CommandError(f"org_move: {exc}") from exc
        rows = sum(report.rows_copied.values())
        rate = rows / report.copy_seconds if report.copy_seconds else 0.0
        self.stdout.write(
            f"moved org {report.org_id} from {report.source} to {report.target}: {rows} rows copied "
            f"({rate:.0f} rows/s), {report.changes_applied} caught up, fence {report.fence_seconds:.3f}s, "
            f"version {report.version}, epoch {report.epoch}"
        )
