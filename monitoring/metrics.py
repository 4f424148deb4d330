"""Every project metric, in one place (django-prometheus covers HTTP and DB basics).

Rules: names end in `_total` (counters) or `_seconds`/`_bytes` (units); label sets are
fixed and small; no label ever carries an org, user, property or entry id (10 million
orgs would be 10 million series). Gauges declare how they add up across server
processes (prometheus_client multiprocess mode): `livesum` for things each live
process holds, `max`/`mostrecent` for facts every process measures alike.

SLO thresholds are bucket boundaries (0.3 s for the API, 1 s for realtime delivery),
so an SLI is `bucket{le=threshold} / count`, never an averaged quantile.
"""

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# Fixed label vocabularies, declared next to their metrics below (DECLARED_LABELS) and
# touched at start-up so every series exists (at 0) in the very first scrape: alerts
# and dashboards then see 0, not "no data". Code may emit only these values:
# tests/conftest.py fails any test after which a metric holds an undeclared one.
IDEMPOTENCY_OUTCOMES = ("executed", "replayed", "conflict", "mismatch", "invalid", "rolled_back")
REALTIME_REJECTION_REASONS = ("auth", "not_member", "user_limit", "org_limit")
EDGE_CACHE_RESULTS = ("hit", "miss")
POOL_STATES = ("size", "in_use", "idle", "waiting")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "other")
ROUTER_TARGETS = ("replica", "primary")
# Why a read went where it went: replicas/router.py's reasons (and the request pins of
# replicas/middleware.py and replicas/router.py), nothing else.
ROUTER_REASONS = (
    "replica",  # a caught-up replica serves it
    "replicas_disabled",
    "write_request",  # POST/PUT/PATCH/DELETE: pinned to the primary
    "after_write",
    "transaction",
    "replica_left_rotation",
    "replicas_starting",
    "no_replica_available",
    "position_unknown",
    "replica_behind_client",
    "access_check",  # token and membership checks: always the primary (docs/security.md)
    "replica_connection",  # pinned after a replica failed mid-request
    "replica_conflict",
    "retry_after_connection",
    "retry_after_conflict",
    "write",  # a write routed to the primary
)
CDN_PROVIDERS = ("varnish", "fastly", "cloudflare", "none")
CDN_PURGE_OUTCOMES = ("ok", "rate_limited", "error", "unreachable")

API_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- HTTP API ---------------------------------------------------------------------------
api_requests = Counter(
    "api_requests_total",
    "API requests by route template, method and status class.",
    ["route", "method", "status_class"],
)
api_request_duration = Histogram(
    "api_request_duration_seconds",
    "API request latency by route template, method and status class.",
    ["route", "method", "status_class"],
    buckets=API_LATENCY_BUCKETS,
)

# --- Database routing and replicas ------------------------------------------------------
db_router_decisions = Counter(
    "db_router_decisions_total",
    "Read routing decisions: target is replica or primary; reason says why.",
    ["target", "reason"],
)
# Queries by alias: django-prometheus' database engine counts them
# (django_db_execute_total{alias}, django_db_query_duration_seconds{alias}).
# Replica gauges are `livemax`: every live process may run the checker; the worst lag
# any live process measured is the one to alert on, and a dead process's stale value
# is dropped (mark_process_dead). They start at 0 so the series exist before the
# first check; `in_rotation` is 1 when at least one live process routes to it.
db_replica_lag_seconds = Gauge(
    "db_replica_lag_seconds", "Replay lag of each replica in seconds.", ["alias"], multiprocess_mode="livemax"
)
db_replica_lag_bytes = Gauge(
    "db_replica_lag_bytes", "Replay lag of each replica in WAL bytes.", ["alias"], multiprocess_mode="livemax"
)
db_replica_in_rotation = Gauge(
    "db_replica_in_rotation",
    "1 when the replica serves reads, 0 when it is out of rotation.",
    ["alias"],
    multiprocess_mode="livemax",
)
db_pool_connections = Gauge(
    "db_pool_connections",
    "Connection pool state per alias: size, in_use, idle, waiting.",
    ["alias", "state"],
    multiprocess_mode="livesum",
)
db_pool_max_connections = Gauge(
    "db_pool_max_connections", "Pool capacity per alias.", ["alias"], multiprocess_mode="livesum"
)

# --- Idempotency --------------------------------------------------------------------------
idempotency_requests = Counter(
    "idempotency_requests_total",
    "Writes carrying an Idempotency-Key, by outcome: executed, replayed, conflict (409), "
    "mismatch (422), invalid (400), rolled_back (failed; nothing kept, the key stays free).",
    ["outcome"],
)
idempotency_redis_degraded = Counter(
    "idempotency_redis_degraded_total",
    "Idempotent requests served without Redis (down, slow, or circuit open).",
)

# --- Realtime -----------------------------------------------------------------------------
realtime_connections = Gauge(
    "realtime_connections", "Open websocket connections.", multiprocess_mode="livesum"
)
realtime_rejections = Counter(
    "realtime_rejections_total",
    "Refused websocket connections by reason: auth, not_member, user_limit, org_limit.",
    ["reason"],
)
realtime_deliveries = Counter("realtime_deliveries_total", "Events sent to websocket clients.")
realtime_delivery_latency = Histogram(
    "realtime_delivery_latency_seconds",
    "Time from a change's commit to its event being sent on a socket.",
    buckets=DELIVERY_BUCKETS,
)
realtime_slow_consumer_disconnects = Counter(
    "realtime_slow_consumer_disconnects_total", "Sockets closed because the client did not read."
)

# --- Edge cache ---------------------------------------------------------------------------
# Hits never reach the origin: `edge_cache_requests_total{result="hit"|"miss"}` is read
# from Varnish's own counters at scrape time (monitoring/exposition.py, EDGE_CACHE_RESULTS).
cdn_purges = Counter(
    "cdn_purges_total", "Purge requests to the CDN by provider and outcome.", ["provider", "outcome"]
)
cdn_purge_queue_depth = Gauge(
    "cdn_purge_queue_depth", "Purges waiting for retry in the durable queue.", multiprocess_mode="max"
)


# Label values each metric may carry; None: an open set (route templates, aliases).
DECLARED_LABELS: dict[MetricWrapperBase, dict[str, tuple[str, ...] | None]] = {
    api_requests: {"route": None, "method": HTTP_METHODS, "status_class": STATUS_CLASSES},
    api_request_duration: {"route": None, "method": HTTP_METHODS, "status_class": STATUS_CLASSES},
    db_router_decisions: {"target": ROUTER_TARGETS, "reason": ROUTER_REASONS},
    db_replica_lag_seconds: {"alias": None},
    db_replica_lag_bytes: {"alias": None},
    db_replica_in_rotation: {"alias": None},
    db_pool_connections: {"alias": None, "state": POOL_STATES},
    db_pool_max_connections: {"alias": None},
    idempotency_requests: {"outcome": IDEMPOTENCY_OUTCOMES},
    realtime_rejections: {"reason": REALTIME_REJECTION_REASONS},
    cdn_purges: {"provider": CDN_PROVIDERS, "outcome": CDN_PURGE_OUTCOMES},
}


def declare_labels(metric: MetricWrapperBase, **labels: tuple[str, ...] | None) -> None:
    """Declare the label values of a metric defined outside this module (e.g. changelog's)."""
    DECLARED_LABELS[metric] = labels


def undeclared_label_values(
    declared: dict[MetricWrapperBase, dict[str, tuple[str, ...] | None]] | None = None,
) -> list[str]:
    """Every (metric, label, value) a metric holds outside its declared set."""
    found = []
    for metric, labels in (DECLARED_LABELS if declared is None else declared).items():
        if set(metric._labelnames) != set(labels):
            found.append(f"{metric._name}: labels {metric._labelnames} declared as {sorted(labels)}")
            continue
        for family in metric.collect():
            for sample in family.samples:
                for label, allowed in labels.items():
                    value = sample.labels.get(label)
                    if allowed is not None and value not in allowed:
                        found.append(f"{metric._name}{{{label}={value!r}}} not in {allowed}")
    return sorted(set(found))
