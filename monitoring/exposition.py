"""What a scrape sees: under several server processes (PROMETHEUS_MULTIPROC_DIR set)
the sum of every process's metric files, else this process's own registry."""

import os

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def metrics_source() -> Collector:
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def prometheus_text() -> bytes:
    return generate_latest(metrics_source())  # type: ignore[arg-type]
