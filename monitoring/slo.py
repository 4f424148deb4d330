"""The figures of GET /v1/system/metrics/aggregated and the five SLOs, over a sliding
window (SLO_WINDOW_SECONDS) of real measurements.

A figure that cannot be measured yet (no user traffic in the window, no realtime
delivery, no edge-cache report) is null, and so is its SLO's `compliant`: unknown is
not the same as fine.
"""

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from monitoring.histogram_math import bucket_delta, bucket_quantile, ratio_at_or_below
from monitoring.metric_reading import Reading, take_reading
from monitoring.slo_window import reading_store

API_LATENCY_THRESHOLD_SECONDS = 0.3
DELIVERY_LATENCY_THRESHOLD_SECONDS = 1.0


@dataclass(frozen=True)
class Objective:
    name: str
    target: float
    unit: str
    higher_is_better: bool
    description: str


OBJECTIVES = (
    Objective("api_latency_p95", API_LATENCY_THRESHOLD_SECONDS, "seconds", False, "API p95 latency < 300 ms"),
    Objective(
        "realtime_delivery_p95",
        DELIVERY_LATENCY_THRESHOLD_SECONDS,
        "seconds",
        False,
        "realtime delivery p95 < 1 s",
    ),
    Objective("cache_hit_rate", 0.85, "ratio", True, "edge cache hit rate > 85 %"),
    Objective("error_rate", 0.001, "ratio", False, "API 5xx rate < 0.1 %"),
    Objective("availability", 0.9995, "ratio", True, "API non-5xx share > 99.95 %"),
)


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _latency_compliant(buckets: dict[str, float], threshold: float) -> bool | None:
    """p95 below the threshold <=> at least 95 % of observations at or below it."""
    share = ratio_at_or_below(threshold, buckets)
    return None if share is None else share >= 0.95


def _slo_entry(objective: Objective, current: float | None, compliant: bool | None) -> dict[str, Any]:
    if compliant is None and current is not None:
        compliant = current > objective.target if objective.higher_is_better else current < objective.target
    return {
        "name": objective.name,
        "target": objective.target,
        "current": current,
        "compliant": compliant,
        "unit": objective.unit,
        "description": objective.description,
    }


def aggregated_report(now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    window = settings.SLO_WINDOW_SECONDS
    current = take_reading(now)
    baseline: Reading = reading_store().baseline(now, window)

    requests = current.api_requests - baseline.api_requests
    errors = current.api_errors - baseline.api_errors
    api_buckets = bucket_delta(current.api_buckets, baseline.api_buckets)
    delivery_buckets = bucket_delta(current.delivery_buckets, baseline.delivery_buckets)
    if any(count < 0 for count in delivery_buckets.values()):  # the shared figures were reset
        delivery_buckets = dict(current.delivery_buckets)  # (Redis restarted): count since then
    hits = current.cache_hits - baseline.cache_hits
    misses = current.cache_misses - baseline.cache_misses
    if hits < 0 or misses < 0:  # the edge restarted inside the window: count since then
        hits, misses = current.cache_hits, current.cache_misses

    error_rate = _ratio(errors, requests)
    availability = None if error_rate is None else 1.0 - error_rate
    hit_rate = _ratio(hits, hits + misses)
    p95 = bucket_quantile(0.95, api_buckets)
    delivery_p95 = bucket_quantile(0.95, delivery_buckets)

    objectives = {o.name: o for o in OBJECTIVES}
    slo = [
        _slo_entry(
            objectives["api_latency_p95"], p95, _latency_compliant(api_buckets, API_LATENCY_THRESHOLD_SECONDS)
        ),
        _slo_entry(
            objectives["realtime_delivery_p95"],
            delivery_p95,
            _latency_compliant(delivery_buckets, DELIVERY_LATENCY_THRESHOLD_SECONDS),
        ),
        _slo_entry(objectives["cache_hit_rate"], hit_rate, None),
        _slo_entry(objectives["error_rate"], error_rate, None),
        _slo_entry(objectives["availability"], availability, None),
    ]
    pool = {
        alias: {
            "in_use": in_use,
            "max": current.pool_max.get(alias),
            "use_ratio": _ratio(in_use, current.pool_max.get(alias) or 0.0),
        }
        for alias, in_use in sorted(current.pool_in_use.items())
    }
    return {
        "window": {
            "target_seconds": window,
            "seconds": round(now - baseline.ts, 3),
            "from": baseline.ts,
            "to": now,
        },
        "api": {
            "requests": int(requests),
            "errors_5xx": int(errors),
            "error_rate": error_rate,
            "latency_seconds": {
                "p50": bucket_quantile(0.5, api_buckets),
                "p95": p95,
                "p99": bucket_quantile(0.99, api_buckets),
            },
        },
        "realtime": {
            "deliveries": int(delivery_buckets.get("+Inf", 0.0)),
            "delivery_p95_seconds": delivery_p95,
        },
        "cache": {"hits": int(hits), "misses": int(misses), "hit_rate": hit_rate},
        "pool": pool,
        "replica_lag_seconds": dict(sorted(current.replica_lag_seconds.items())),
        "slo": slo,
    }
