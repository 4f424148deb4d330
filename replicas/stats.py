"""Routing counters of this process (the /replicas/stats body) mirrored to Prometheus.

Prometheus (db_router_decisions_total; queries per alias are django-prometheus'
django_db_execute_total) adds up every server
process; the JSON endpoint answers for the process that serves it.
"""

import threading
from collections import Counter
from typing import Any

from monitoring import metrics


class RoutingStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.reads: Counter[str] = Counter()  # routed reads per alias
            self.writes: Counter[str] = Counter()  # write routings per primary alias
            self.primary_reasons: Counter[str] = Counter()  # why a read went to a primary
            self.retries: Counter[str] = Counter()  # reads re-run elsewhere, by reason
            self.replica_queries: Counter[str] = Counter()  # statements that ran on each replica

    def read(self, alias: str, *, replica: bool, reason: str) -> None:
        with self._lock:
            self.reads[alias] += 1
            if not replica:
                self.primary_reasons[reason] += 1
        metrics.db_router_decisions.labels("replica" if replica else "primary", reason).inc()

    def write(self, alias: str) -> None:
        with self._lock:
            self.writes[alias] += 1
        metrics.db_router_decisions.labels("primary", "write").inc()

    def retry(self, reason: str) -> None:
        with self._lock:
            self.retries[reason] += 1

    def replica_query(self, alias: str) -> None:
        with self._lock:
            self.replica_queries[alias] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            total_reads = sum(self.reads.values())
            return {
                "reads": dict(self.reads),
                "reads_total": total_reads,
                "writes": dict(self.writes),
                "writes_total": sum(self.writes.values()),
                "fallbacks_to_primary": dict(self.primary_reasons),
                "fallbacks_to_primary_total": sum(self.primary_reasons.values()),
                "retries": dict(self.retries),
                "replica_queries": dict(self.replica_queries),
            }


routing_stats = RoutingStats()
