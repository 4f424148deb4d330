"""`manage.py replica_healthcheck [--json] [--watch SECONDS]`

Checks the primary and every replica now and prints their state. Exit status:
0 all healthy; 1 degraded (a replica lags past the warning threshold or is out of
rotation); 2 unhealthy (a primary is unreachable, or replicas are configured and none
is usable). With --watch it repeats every SECONDS until interrupted (or --count
rounds) and exits with the last round's status.
"""

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from replicas.reports import DEGRADED, HEALTHY, health_report, lag_report

EXIT_CODES = {HEALTHY: 0, DEGRADED: 1}


class Command(BaseCommand):
    help = "Check the primary and the read replicas; exit 0 healthy, 1 degraded, 2 unhealthy."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object per round")
        parser.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS")
        parser.add_argument("--count", type=int, default=0, help="with --watch: stop after N rounds")

    def handle(self, *args: Any, **options: Any) -> None:
        rounds = 0
        status = HEALTHY
        try:
            while True:
                status = self._round(as_json=options["json"])
                rounds += 1
                if not options["watch"] or (options["count"] and rounds >= options["count"]):
                    break
                time.sleep(options["watch"])
        except KeyboardInterrupt:
            pass
        raise SystemExit(EXIT_CODES.get(status, 2))

    def _round(self, *, as_json: bool) -> str:
        health = health_report(check_now=True)
        lag = {r["alias"]: r for r in lag_report()["replicas"]}
        if as_json:
            self.stdout.write(json.dumps({**health, "lag": list(lag.values())}))
            return health["status"]
        self.stdout.write(f"status: {health['status']}")
        for p in health["primaries"]:
            state = "up" if p["healthy"] else f"DOWN ({p['last_error']})"
            self.stdout.write(f"  primary {p['alias']:<12} {state}")
        for r in health["replicas"]:
            info = lag[r["alias"]]
            rotation = "in rotation" if r["in_rotation"] else "OUT of rotation"
            detail = f"lag {info['lag_seconds']}s / {info['lag_bytes']} bytes"
            if r["last_error"]:
                detail = r["last_error"]
            self.stdout.write(f"  replica {r['alias']:<12} {info['status']:<8} {rotation:<16} {detail}")
        return health["status"]
