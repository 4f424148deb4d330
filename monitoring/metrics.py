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

# Fixed label vocabularies, touched at start-up so every series exists (at 0) in the
# very first scrape: alerts and dashboards then see 0, not "no data".
IDEMPOTENCY_OUTCOMES = ("executed", "replayed", "conflict", "mismatch", "invalid")
REALTIME_REJECTION_REASONS = ("auth", "not_member", "user_limit", "org_limit")
EDGE_CACHE_RESULTS = ("hit", "miss")
POOL_STATES = ("size", "in_use", "idle", "waiting")
# Read-routing decisions as (target, reason). The router may add reasons; these are the
# ones DESIGN.md names, so dashboards show them from the first scrape.
ROUTER_DECISIONS = (
    ("replica", "replica_ok"),
    ("primary", "write"),
    ("primary", "in_transaction"),
    ("primary", "read_your_writes"),
    ("primary", "no_usable_replica"),
)
CDN_PURGE_OUTCOMES = ("purged", "failed", "queued")

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
# Hits never reach the origin, so the CDN integration (e.g. a varnishstat poller or the
# purge worker) reports the edge's own hit/miss counts here; until something does, the
# series stay at 0 and the SLO endpoint reports the hit rate as unknown (null).
edge_cache_requests = Counter(
    "edge_cache_requests_total", "Edge cache lookups by result: hit or miss.", ["result"]
)
cdn_purges = Counter(
    "cdn_purges_total", "Purge requests to the CDN by provider and outcome.", ["provider", "outcome"]
)
cdn_purge_queue_depth = Gauge(
    "cdn_purge_queue_depth", "Purges waiting for retry in the durable queue.", multiprocess_mode="max"
)
