"""Realtime figures across all server processes, kept in one Redis hash.

Each process counts deliveries and their latency locally (and in its Prometheus
metrics) and adds them to Redis about once a second, so the hot path never waits on
Redis; rare events (rejections, slow-consumer closes) are added at once. Latency goes
into fixed buckets (milliseconds), so p50/p95/p99 are exact to a bucket's width and
memory never grows.
"""

import asyncio
import bisect
import logging
from collections.abc import Mapping
from typing import Any

import redis
from django.conf import settings

from core.redis_clients import aredis_call, async_redis, redis_call, sync_redis
from monitoring.metrics import realtime_deliveries, realtime_delivery_latency
from realtime import keys

logger = logging.getLogger(__name__)

LATENCY_BOUNDS_MS = (
    1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200,
    250, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000, 5000, 10000,
)  # fmt: skip
OVERFLOW_BUCKET = len(LATENCY_BOUNDS_MS)  # slower than the last bound
REJECTION_REASONS = ("auth", "not_member", "user_limit", "org_limit")


class DeliveryCounter:
    """One per event loop (process): deliveries and latency waiting to be flushed."""

    def __init__(self) -> None:
        self.deliveries = 0
        self.buckets: dict[int, int] = {}

    def record(self, *, latency_seconds: float | None) -> None:
        realtime_deliveries.inc()
        self.deliveries += 1
        if latency_seconds is None:  # a replayed event: delivered, but not "live" latency
            return
        latency_seconds = max(latency_seconds, 0.0)
        realtime_delivery_latency.observe(latency_seconds)
        bucket = bisect.bisect_left(LATENCY_BOUNDS_MS, latency_seconds * 1000)
        self.buckets[bucket] = self.buckets.get(bucket, 0) + 1

    async def flush(self) -> None:
        if not self.deliveries:
            return
        deliveries, buckets = self.deliveries, self.buckets
        self.deliveries, self.buckets = 0, {}
        try:

            async def add() -> None:
                async with async_redis().pipeline(transaction=False) as pipe:
                    pipe.hincrby(keys.STATS_KEY, "deliveries", deliveries)
                    for bucket, count in buckets.items():
                        pipe.hincrby(keys.STATS_KEY, f"latency:{bucket}", count)
                    await pipe.execute()

            await aredis_call(add)
        except redis.RedisError as error:  # figures lost, never deliveries
            logger.warning("realtime stats flush failed: %s", error)

    async def run_flusher(self) -> None:
        while True:
            await asyncio.sleep(settings.REALTIME_STATS_FLUSH_SECONDS)
            await self.flush()


async def counter_add(field: str, amount: int = 1) -> None:
    try:
        await aredis_call(lambda: async_redis().hincrby(keys.STATS_KEY, field, amount))
    except redis.RedisError as error:
        logger.warning("realtime counter %s not recorded: %s", field, error)


def latency_percentile_ms(buckets: list[int], quantile: float) -> float | None:
    """The upper bound (ms) of the bucket holding the quantile; None without data."""
    total = sum(buckets)
    if not total:
        return None
    rank = quantile * total
    running = 0
    for index, count in enumerate(buckets):
        running += count
        if running >= rank:
            return float(LATENCY_BOUNDS_MS[index]) if index < OVERFLOW_BUCKET else float("inf")
    return float("inf")


def latency_buckets(raw: Mapping[bytes | str, bytes | str]) -> list[int]:
    return [int(raw.get(f"latency:{index}", 0)) for index in range(OVERFLOW_BUCKET + 1)]


def latency_summary(buckets: list[int]) -> dict[str, float | None]:
    return {
        name: latency_percentile_ms(buckets, quantile)
        for name, quantile in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
    }


def stats_snapshot() -> dict[str, Any]:
    """Cumulative figures since the counters began (sync: for the metrics view)."""
    raw = redis_call(lambda: sync_redis().hgetall(keys.STATS_KEY))
    buckets = latency_buckets(raw)
    latency = latency_summary(buckets)
    return {
        "deliveries": int(raw.get("deliveries", 0)),
        "events_published": int(raw.get("events_published", 0)),
        "rejections": {reason: int(raw.get(f"rejections:{reason}", 0)) for reason in REJECTION_REASONS},
        "slow_consumer_disconnects": int(raw.get("slow_consumer_disconnects", 0)),
        "delivery_latency_ms": {**latency, "count": sum(buckets)},
    }


def cumulative_latency_buckets() -> dict[str, float] | None:
    """Every process's delivery latencies as Prometheus-style cumulative buckets
    (`le` in seconds, as the SLO code reads histograms), or None if Redis cannot say.

    The websocket servers are not the REST servers, so the SLO endpoint (on gunicorn)
    cannot see their Prometheus files; this shared hash is what it can read."""
    try:
        raw = redis_call(lambda: sync_redis().hgetall(keys.STATS_KEY))
    except redis.RedisError:
        return None
    cumulative, total = {}, 0.0
    for bound, count in zip((*LATENCY_BOUNDS_MS, None), latency_buckets(raw), strict=True):
        total += count
        cumulative["+Inf" if bound is None else str(bound / 1000)] = total
    return cumulative
