"""Create every series with a known label set at start-up (value 0), so the first
scrape already holds them: an alert or a panel then reads 0, not "no data"."""

from django.conf import settings

from monitoring import metrics


def touch_known_label_sets() -> None:
    aliases = list(settings.DATABASES)
    for alias in aliases:
        for state in metrics.POOL_STATES:
            metrics.db_pool_connections.labels(alias, state)
        metrics.db_pool_max_connections.labels(alias)
    for alias in replica_aliases():
        metrics.db_replica_lag_seconds.labels(alias)
        metrics.db_replica_lag_bytes.labels(alias)
        metrics.db_replica_in_rotation.labels(alias)
    for reason in metrics.ROUTER_REASONS:
        metrics.db_router_decisions.labels("primary" if reason != "replica" else "replica", reason)
    provider = getattr(settings, "CDN_PROVIDER", "none")
    for outcome in metrics.CDN_PURGE_OUTCOMES:
        metrics.cdn_purges.labels(provider, outcome)
    for outcome in metrics.IDEMPOTENCY_OUTCOMES:
        metrics.idempotency_requests.labels(outcome)
    for reason in metrics.REALTIME_REJECTION_REASONS:
        metrics.realtime_rejections.labels(reason)


def replica_aliases() -> list[str]:
    """Every database alias other than the primary's (`default`) is a read replica."""
    return [alias for alias in settings.DATABASES if alias != "default"]
