"""Read the current, all-process totals the SLO figures are computed from.

A `Reading` is cumulative since the metrics started: windowed figures are the
difference of two readings (see monitoring/slo_window.py).
"""

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecache.stats import varnish_counters
from monitoring.exposition import metrics_source
from realtime.stats import cumulative_latency_buckets

# Monitoring and system routes (health probes, scrapes) are operator traffic: they
# would dilute the user-facing SLIs, so the SLIs leave them out.
OPERATOR_ROUTE_PREFIX = "/v1/system/"


@dataclass
class Reading:
    ts: float
    api_requests: float = 0.0
    api_errors: float = 0.0
    api_buckets: dict[str, float] = field(default_factory=dict)  # le -> cumulative count
    delivery_buckets: dict[str, float] = field(default_factory=dict)
    cache_hits: float = 0.0
    cache_misses: float = 0.0
    pool_in_use: dict[str, float] = field(default_factory=dict)  # gauges: current values
    pool_max: dict[str, float] = field(default_factory=dict)
    replica_lag_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reading":
        return cls(**data)


def _user_facing(labels: dict[str, str]) -> bool:
    return not labels.get("route", "").startswith(OPERATOR_ROUTE_PREFIX)


def _add_api_sample(reading: Reading, name: str, labels: dict[str, str], value: float) -> None:
    if not _user_facing(labels):
        return
    if name == "api_requests_total":
        reading.api_requests += value
        if labels.get("status_class") == "5xx":
            reading.api_errors += value
    elif name == "api_request_duration_seconds_bucket":
        reading.api_buckets[labels["le"]] = reading.api_buckets.get(labels["le"], 0.0) + value


def _add_other_sample(reading: Reading, name: str, labels: dict[str, str], value: float) -> None:
    if name == "realtime_delivery_latency_seconds_bucket":
        reading.delivery_buckets[labels["le"]] = reading.delivery_buckets.get(labels["le"], 0.0) + value
    elif name == "db_pool_connections" and labels.get("state") == "in_use":
        reading.pool_in_use[labels["alias"]] = value
    elif name == "db_pool_max_connections":
        reading.pool_max[labels["alias"]] = value
    elif name == "db_replica_lag_seconds":
        reading.replica_lag_seconds[labels["alias"]] = value


def take_reading(now: float) -> Reading:
    reading = Reading(ts=now)
    for family in metrics_source().collect():
        for sample in family.samples:
            if math.isnan(sample.value):
                continue
            if sample.name.startswith("api_"):
                _add_api_sample(reading, sample.name, sample.labels, sample.value)
            else:
                _add_other_sample(reading, sample.name, sample.labels, sample.value)
    # Cache hits never reach the origin: the edge's own counters (cumulative since it
    # started) are the measurement where it can be read (Varnish on this host).
    add_external_figures(reading)
    return reading


def add_external_figures(reading: Reading) -> Reading:
    """Figures other processes keep, cumulative since THEY started (not this server):
    the edge's hit and miss counters (cache hits never reach the origin) and, when this
    process delivers no websocket events itself, the websocket servers' shared latency
    buckets. A server's first reading carries them too, so its first window counts only
    what happened since, like its own counters."""
    if not any(reading.delivery_buckets.values()):
        reading.delivery_buckets = cumulative_latency_buckets() or reading.delivery_buckets
    edge = varnish_counters()
    if edge:
        reading.cache_hits += edge.get("MAIN.cache_hit", 0)
        reading.cache_misses += edge.get("MAIN.cache_miss", 0)
    return reading
