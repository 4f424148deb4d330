"""Quantiles and threshold ratios from cumulative Prometheus histogram buckets, the
same way PromQL's histogram_quantile does (linear within the bucket)."""

import math


def _sorted_buckets(buckets: dict[str, float]) -> list[tuple[float, float]]:
    return sorted((float(le), count) for le, count in buckets.items())


def bucket_quantile(q: float, buckets: dict[str, float]) -> float | None:
    """The q-quantile, or None with no observations. A quantile in the +Inf bucket is
    reported as the highest finite bound (a lower bound, as in Prometheus)."""
    ordered = _sorted_buckets(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def ratio_at_or_below(threshold: float, buckets: dict[str, float]) -> float | None:
    """Share of observations <= threshold, which must be a bucket boundary."""
    ordered = dict(_sorted_buckets(buckets))
    total = ordered.get(math.inf, 0.0)
    if total <= 0:
        return None
    if threshold not in ordered:
        raise ValueError(f"{threshold} is not a bucket boundary")
    return ordered[threshold] / total


def bucket_delta(now: dict[str, float], then: dict[str, float]) -> dict[str, float]:
    return {le: count - then.get(le, 0.0) for le, count in now.items()}
