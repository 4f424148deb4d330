"""What a scrape sees: under several server processes (PROMETHEUS_MULTIPROC_DIR set)
the sum of every process's metric files, else this process's own registry; plus the
edge's hit and miss counters, read from Varnish itself (cache hits never reach the
origin), which feed the edge hit-rate recording rule and alert."""

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from edgecache.stats import varnish_counters
from monitoring.metrics import EDGE_CACHE_RESULTS


class EdgeCacheCollector(Collector):
    """edge_cache_requests_total{result}: Varnish's MAIN.cache_hit / MAIN.cache_miss."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        counters = varnish_counters()
        if not counters:
            return
        family = CounterMetricFamily(
            "edge_cache_requests", "Edge cache lookups by result (Varnish's counters).", labels=["result"]
        )
        for result in EDGE_CACHE_RESULTS:
            family.add_metric([result], counters.get(f"MAIN.cache_{result}", 0))
        yield family


_edge_registry = CollectorRegistry()
_edge_registry.register(EdgeCacheCollector())


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def metrics_source() -> Collector:
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def prometheus_text() -> bytes:
    return generate_latest(metrics_source()) + generate_latest(_edge_registry)
