"""Settings, all read from the environment (and `.env`, written by bin/stack).

Every setting has a safe default; README.md lists them all. Real environment variables
win over `.env`.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# bin/stack generates a random SECRET_KEY into .env (mode 0600). The fixed development
# key below is only accepted with DEBUG on: a production process refuses to start
# without a real key (docs/security.md).
DEVELOPMENT_SECRET_KEY = "insecure-local-development-key-set-SECRET_KEY-in-production"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
if SECRET_KEY == DEVELOPMENT_SECRET_KEY and not DEBUG:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set: set a long random value (bin/stack writes one to .env), or DEBUG=true"
    )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

INSTALLED_APPS = [
    "accounts.admin_site.ProjectAdminConfig",  # django.contrib.admin with throttled logins
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "knox",  # hashed, expiring, per-login API tokens (accounts/tokens.py)
    "drf_spectacular",
    "core",
    "accounts",
    "tenancy",
    "finance",
    "monitoring",
    "idempotency",
    "edgecache",
    "replicas",
    "directory",  # the org directory: which cluster holds each org (docs/clusters.md)
    "realtime",  # realtime: websockets (CONTRACT §5)
    "push",  # push notifications: Web Push, FCM, APNs (CONTRACT §11, docs/push.md)
    # The org change log and its outbox (docs/changelog.md). After every app that
    # registers a change handler in its ready().
    "changelog",
    "sync",  # sync for offline clients: pull and push (docs/sync.md)
    "django_prometheus",
]

MIDDLEWARE = [
    # --- observability (outermost: ids and timings cover every other middleware) ---
    "monitoring.request_id.RequestIdMiddleware",
    "monitoring.http_metrics.ApiMetricsMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # --- end observability ---
    # Outside the rest, so it sees their final headers (edge cache: docs/edge-cache.md).
    "edgecache.headers.EdgeCacheHeadersMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "core.compression.GZipMiddleware",
    "replicas.middleware.ReplicaRoutingMiddleware",  # read replicas: routing scope per request
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",  # observability: innermost
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# psycopg 3 with its connection pool (one pool per server process and alias). The pool
# replaces persistent connections, so CONN_MAX_AGE must stay 0.
DB_MIN_CONNECTIONS = env.int("DB_MIN_CONNECTIONS", default=10)
DB_MAX_CONNECTIONS = env.int("DB_MAX_CONNECTIONS", default=100)
DB_POOL_TIMEOUT_SECONDS = env.float("DB_POOL_TIMEOUT_SECONDS", default=10.0)
DB_CONNECT_TIMEOUT_SECONDS = env.int("DB_CONNECT_TIMEOUT_SECONDS", default=3)
DB_STATEMENT_TIMEOUT_MS = env.int("DB_STATEMENT_TIMEOUT_MS", default=30000)
# Server-side parameter binding: psycopg then prepares a statement on its connection
# once it has run DB_PREPARE_THRESHOLD times (parsed and planned once per pooled
# connection, not per request: a keyed create's Postgres CPU fell by a third,
# docs/performance.md). "off" never prepares (for a transaction-mode pooler such as
# PgBouncer without prepared-statement support in front of Postgres); False binds on
# the client (every statement parsed and planned each time).
DB_SERVER_SIDE_BINDING = env.bool("DB_SERVER_SIDE_BINDING", default=True)
_prepare_threshold = env.str("DB_PREPARE_THRESHOLD", default="5").strip().lower()
DB_PREPARE_THRESHOLD: int | None = (
    None if _prepare_threshold in ("off", "none", "") else int(_prepare_threshold)
)
# Primary faults (replicas/primary, docs/replicas.md "Primary restarts and hangs"):
# a pooled connection is checked before use within DB_CHECK_TIMEOUT_SECONDS; a hung
# server fails a statement after statement_timeout plus the margin (client side); dead
# peers are noticed by TCP keepalives and tcp_user_timeout; after
# DB_PRIMARY_BREAKER_FAILURES connection failures in a row, new connections are
# refused (503) for DB_PRIMARY_BREAKER_COOLDOWN_SECONDS, then probed.
DB_CHECK_TIMEOUT_SECONDS = env.float("DB_CHECK_TIMEOUT_SECONDS", default=1.0)
# ... except one that answered a statement within this and has nothing unread on its
# socket (a restart leaves an error or EOF there): no round trip (replicas/pools.py).
DB_CHECK_SKIP_SECONDS = env.float("DB_CHECK_SKIP_SECONDS", default=1.0)
DB_STATEMENT_DEADLINE_MARGIN_SECONDS = env.float("DB_STATEMENT_DEADLINE_MARGIN_SECONDS", default=2.0)
DB_KEEPALIVES_IDLE_SECONDS = env.int("DB_KEEPALIVES_IDLE_SECONDS", default=10)
DB_TCP_USER_TIMEOUT_MS = env.int("DB_TCP_USER_TIMEOUT_MS", default=10000)
DB_PRIMARY_BREAKER_FAILURES = env.int("DB_PRIMARY_BREAKER_FAILURES", default=2)
DB_PRIMARY_BREAKER_COOLDOWN_SECONDS = env.float("DB_PRIMARY_BREAKER_COOLDOWN_SECONDS", default=1.0)
# GET /v1/system/health answers 503 when the primary has not answered within this.
HEALTH_DEADLINE_SECONDS = env.float("HEALTH_DEADLINE_SECONDS", default=1.5)
# Retry-After of a 503 while the primary is unreachable.
DB_UNAVAILABLE_RETRY_AFTER_SECONDS = env.int("DB_UNAVAILABLE_RETRY_AFTER_SECONDS", default=1)


def database_config(url: str) -> dict:
    config = env.db_url_config(url)
    # django-prometheus' engine (counts queries per alias), with checked pooled
    # connections, statement deadlines and the primary's breaker (replicas/primary).
    config["ENGINE"] = "replicas.primary"
    config["CONN_MAX_AGE"] = 0
    config.setdefault("OPTIONS", {})
    config["OPTIONS"].update(
        {
            "connect_timeout": DB_CONNECT_TIMEOUT_SECONDS,
            "options": f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}",
            "keepalives": 1,
            "keepalives_idle": DB_KEEPALIVES_IDLE_SECONDS,
            "keepalives_interval": max(1, DB_KEEPALIVES_IDLE_SECONDS // 3),
            "keepalives_count": 3,
            "tcp_user_timeout": DB_TCP_USER_TIMEOUT_MS,
            "server_side_binding": DB_SERVER_SIDE_BINDING,
            "prepare_threshold": DB_PREPARE_THRESHOLD,
            "pool": {
                "min_size": DB_MIN_CONNECTIONS,
                "max_size": max(DB_MAX_CONNECTIONS, DB_MIN_CONNECTIONS),
                "timeout": DB_POOL_TIMEOUT_SECONDS,
            },
        }
    )
    return config


DATABASE_URL = env.str("DATABASE_URL", default="postgres://postgres@127.0.0.1:55432/hospitality")
DATABASES = {"default": database_config(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Read replicas (replicas/, docs/replicas.md) --------------------------------------
REPLICA_URLS = env.list("REPLICA_URLS", default=[])
USE_READ_REPLICAS = env.bool("USE_READ_REPLICAS", default=True)
REPLICA_HEALTH_CHECK_INTERVAL = env.int("REPLICA_HEALTH_CHECK_INTERVAL", default=30000)  # ms
REPLICA_LAG_WARNING_SECONDS = env.float("REPLICA_LAG_WARNING_SECONDS", default=5)
REPLICA_LAG_CRITICAL_SECONDS = env.float("REPLICA_LAG_CRITICAL_SECONDS", default=10)
REPLICA_REJOIN_AFTER_CHECKS = env.int("REPLICA_REJOIN_AFTER_CHECKS", default=3)
REPLICA_CHECK_TIMEOUT_MS = env.int("REPLICA_CHECK_TIMEOUT_MS", default=1000)
REPLICA_READ_TIMEOUT_MS = env.int("REPLICA_READ_TIMEOUT_MS", default=5000)
REPLICA_BREAKER_COOLDOWN_SECONDS = env.float("REPLICA_BREAKER_COOLDOWN_SECONDS", default=5)
REPLICA_POSITION_TTL_SECONDS = env.float("REPLICA_POSITION_TTL_SECONDS", default=30)
REPLICA_CATCH_UP_WAIT_MS = env.int("REPLICA_CATCH_UP_WAIT_MS", default=20)
REPLICA_MIN_CONNECTIONS = env.int("REPLICA_MIN_CONNECTIONS", default=2)
REPLICA_POOL_TIMEOUT_SECONDS = env.float("REPLICA_POOL_TIMEOUT_SECONDS", default=1.0)
REPLICA_ROUTING_HEADER = env.bool("REPLICA_ROUTING_HEADER", default=False)  # X-DB-Read-From (tests)


def replica_database_config(url: str) -> dict:
    """A replica alias: failover backend, a smaller warm pool, a short wait for a
    connection (then the read goes elsewhere). In tests it is not created or flushed
    (TEST MIRROR); tests/conftest.py points it at the real standby's copy of the test
    database."""
    config = database_config(url)
    config["ENGINE"] = "replicas.backend"
    config["OPTIONS"]["pool"].update(
        {
            "min_size": min(REPLICA_MIN_CONNECTIONS, DB_MAX_CONNECTIONS),
            "timeout": REPLICA_POOL_TIMEOUT_SECONDS,
        }
    )
    config["TEST"] = {"MIRROR": "default"}
    return config


REPLICA_ALIASES = [f"replica{n}" for n in range(1, len(REPLICA_URLS) + 1)]
DATABASES |= {
    alias: replica_database_config(url) for alias, url in zip(REPLICA_ALIASES, REPLICA_URLS, strict=True)
}
DATABASE_ROUTERS = ["replicas.router.ReplicaRouter"]
# Clusters (a primary and its replicas); which one holds an org is in the org directory
# (docs/clusters.md). "main" is `default` and its replicas; CLUSTER_COUNT=N adds clusters
# c2..cN from CLUSTER<n>_DATABASE_URL and CLUSTER<n>_REPLICA_URLS (bin/stack writes them).
DATABASE_CLUSTERS = {"main": {"primary": "default", "replicas": REPLICA_ALIASES}}
CLUSTER_COUNT = env.int("CLUSTER_COUNT", default=1)
for _n in range(2, CLUSTER_COUNT + 1):
    _name = f"c{_n}"
    DATABASES[f"{_name}_primary"] = database_config(env.str(f"CLUSTER{_n}_DATABASE_URL"))
    _replicas = [
        f"{_name}_replica{k}" for k, _ in enumerate(env.list(f"CLUSTER{_n}_REPLICA_URLS", default=[]), 1)
    ]
    for _alias, _url in zip(_replicas, env.list(f"CLUSTER{_n}_REPLICA_URLS", default=[]), strict=True):
        DATABASES[_alias] = replica_database_config(_url) | {"TEST": {"MIRROR": f"{_name}_primary"}}
    DATABASE_CLUSTERS[_name] = {"primary": f"{_name}_primary", "replicas": _replicas}
# Users, tokens and the directory live on DIRECTORY_CLUSTER; new orgs go to DEFAULT_CLUSTER.
DIRECTORY_CLUSTER = env.str("DIRECTORY_CLUSTER", default="main")
DEFAULT_CLUSTER = env.str("DEFAULT_CLUSTER", default="main")
# The directory cache (directory/cache.py): entries live DIRECTORY_CACHE_SECONDS while
# the Redis invalidation channel is known alive (heard within DIRECTORY_HEARTBEAT_SECONDS),
# else DIRECTORY_STALE_SECONDS.
DIRECTORY_CACHE_SECONDS = env.float("DIRECTORY_CACHE_SECONDS", default=300)
DIRECTORY_HEARTBEAT_SECONDS = env.float("DIRECTORY_HEARTBEAT_SECONDS", default=3)
DIRECTORY_STALE_SECONDS = env.float("DIRECTORY_STALE_SECONDS", default=1)
# An org's writes wait at most this long (then 503 + Retry-After) during a move's switch.
ORG_MOVE_FENCE_SECONDS = env.float("ORG_MOVE_FENCE_SECONDS", default=5)

# --- Redis ----------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:56379/0")
# Comma-separated host:port seeds of a Redis Cluster; set, every Redis use goes to the
# cluster instead of REDIS_URL (core/redis_clients.py, docs/redis.md).
REDIS_CLUSTER_NODES = env.list("REDIS_CLUSTER_NODES", default=[])
REDIS_SOCKET_TIMEOUT_SECONDS = env.float("REDIS_SOCKET_TIMEOUT_SECONDS", default=0.25)
# One circuit breaker per process for every Redis path (core/redis_clients.py): open
# after this many failures in a row, try Redis again after the cooldown.
REDIS_BREAKER_FAILURES = env.int("REDIS_BREAKER_FAILURES", default=3)
REDIS_BREAKER_COOLDOWN_SECONDS = env.float("REDIS_BREAKER_COOLDOWN_SECONDS", default=5.0)

# --- Idempotency (CONTRACT §3, docs/idempotency.md) -----------------------------------
IDEMPOTENCY_TTL_SECONDS = env.int("IDEMPOTENCY_TTL_SECONDS", default=86400)
IDEMPOTENCY_REQUIRED = env.bool("IDEMPOTENCY_REQUIRED", default=False)
# How long a Redis in-flight claim lives if its owner dies before releasing it (a
# duplicate then gets 409 meanwhile). Safe to keep short: Postgres still decides.
IDEMPOTENCY_LOCK_TTL_MS = env.int("IDEMPOTENCY_LOCK_TTL_MS", default=10000)
IDEMPOTENCY_RETRY_AFTER_SECONDS = env.int("IDEMPOTENCY_RETRY_AFTER_SECONDS", default=1)

# --- Auth -----------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# API tokens (django-rest-knox): one per login, stored as a SHA-512 digest, expiring.
AUTH_TOKEN_TTL_SECONDS = env.int("AUTH_TOKEN_TTL_SECONDS", default=30 * 24 * 3600)
# Per-process cache of org routes' token + membership answers (accounts/access_cache.py):
# each served at most this long; below 1 (CONTRACT §1 revocation within 1 s); 0: off.
ACCESS_CACHE_SECONDS = env.float("ACCESS_CACHE_SECONDS", default=0.5)
REST_KNOX = {"AUTH_HEADER_PREFIX": "Token", "TOKEN_TTL": None}  # expiry set per token (accounts/tokens.py)
# Login throttling (accounts/login_throttle.py), counted in Redis across all processes.
AUTH_MAX_FAILURES = env.int("AUTH_MAX_FAILURES", default=5)  # per username
AUTH_MAX_FAILURES_PER_ADDRESS = env.int("AUTH_MAX_FAILURES_PER_ADDRESS", default=20)  # per client address
AUTH_FAILURE_WINDOW_SECONDS = env.int("AUTH_FAILURE_WINDOW_SECONDS", default=300)
# How many proxies in front of the service append to X-Forwarded-For (Varnish: 1). The
# client address is the entry that many places from the right; 0 trusts no header.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# Requests per token per minute, across all processes (accounts/rate_limit.py).
API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=1200)

# --- HTTP limits and security ---------------------------------------------------------
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=32 * 1024 * 1024)
# The body limit is enforced before Django (config/body_limit.py); Django's own limit
# is aligned with it so a body the limiter let through is never refused a second time.
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
MAX_JSON_BODY_BYTES = env.int("MAX_JSON_BODY_BYTES", default=1024 * 1024)  # JSON bodies of writes: 413
GZIP_MIN_BYTES = env.int("GZIP_MIN_BYTES", default=1024)
CORS_ALLOWED_ORIGINS = env.list(
    "CORS_ALLOWED_ORIGINS",
    default=["http://localhost:3000", "http://127.0.0.1:3000", "http://localhost:5173"],
)
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "x-request-id",
    "x-db-position",  # read replicas: the client's last write position
)
CORS_EXPOSE_HEADERS = ("idempotent-replayed", "retry-after", "x-request-id", "x-db-position")
SECURE_CONTENT_TYPE_NOSNIFF = True
# TLS terminates at the edge; behind it, trust its X-Forwarded-Proto only when told to.
SECURE_COOKIES = env.bool("SECURE_COOKIES", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_COOKIES
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"

# --- REST framework -------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ExpiringTokenAuthentication"],
    "DEFAULT_THROTTLE_CLASSES": ["accounts.rate_limit.TokenRateThrottle"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.DecimalJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "core.openapi.ApiSchema",  # how views document themselves
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
}
PAGE_SIZE_DEFAULT = env.int("PAGE_SIZE_DEFAULT", default=50)
PAGE_SIZE_MAX = env.int("PAGE_SIZE_MAX", default=200)
SPECTACULAR_SETTINGS = {
    "TITLE": "Hospitality finance API",
    "DESCRIPTION": "Multi-tenant expenses and revenues for hospitality businesses.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"CheckStateEnum": ["ok", "failing"]},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.openapi.postprocess",
        "core.openapi.add_links",
    ],
}

# --- Edge cache (edgecache/, docs/edge-cache.md) ----------------------------------------
# Read lazily by edgecache (tests override them). Tokens default to empty: a provider
# without its credentials fails its purges into the retry queue, loudly.
CDN_PROVIDER = env.str("CDN_PROVIDER", default="varnish")  # varnish | fastly | cloudflare | none
CDN_S_MAXAGE_SECONDS = env.int("CDN_S_MAXAGE_SECONDS", default=60)
CDN_AUTH_TTL_SECONDS = env.int("CDN_AUTH_TTL_SECONDS", default=5)
CDN_PURGE_TIMEOUT_SECONDS = env.float("CDN_PURGE_TIMEOUT_SECONDS", default=1.0)
CDN_PURGE_INLINE_RETRY_MAX_SECONDS = env.float("CDN_PURGE_INLINE_RETRY_MAX_SECONDS", default=1.0)
CDN_PURGE_BREAKER_SECONDS = env.float("CDN_PURGE_BREAKER_SECONDS", default=2.0)
CDN_VARNISH_URLS = env.list("CDN_VARNISH_URLS", default=["http://127.0.0.1:8080"])
CDN_VARNISH_NAME = env.str("CDN_VARNISH_NAME", default="")  # varnishd -n, for varnishstat
CDN_FASTLY_API_URL = env.str("CDN_FASTLY_API_URL", default="https://api.fastly.com")
CDN_FASTLY_SERVICE_ID = env.str("CDN_FASTLY_SERVICE_ID", default="")
CDN_FASTLY_API_TOKEN = env.str("CDN_FASTLY_API_TOKEN", default="")
CDN_CLOUDFLARE_API_URL = env.str("CDN_CLOUDFLARE_API_URL", default="https://api.cloudflare.com")
CDN_CLOUDFLARE_ZONE_ID = env.str("CDN_CLOUDFLARE_ZONE_ID", default="")
CDN_CLOUDFLARE_API_TOKEN = env.str("CDN_CLOUDFLARE_API_TOKEN", default="")

# --- Internationalisation, static -----------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Logging --------------------------------------------------------------------------
# JSON lines (default) or plain text; every line carries the request id.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOG_PARTITION_ROUTING = env.bool("LOG_PARTITION_ROUTING", default=False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "monitoring.log_format.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "monitoring.log_format.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain" if LOG_FORMAT == "plain" else "json",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

# --- Org change log (changelog/, docs/changelog.md) ------------------------------------
# The worker leaves a fresh change this long to the request thread that made it.
CHANGELOG_WORKER_GRACE_SECONDS = env.float("CHANGELOG_WORKER_GRACE_SECONDS", default=1.0)
CHANGELOG_WORKER_POLL_SECONDS = env.float("CHANGELOG_WORKER_POLL_SECONDS", default=0.2)
# Delivered outbox rows wait this long in their server process to be deleted (or handed
# to the worker) together, one statement per batch (changelog/finishing.py); 0 finishes
# each on its request thread at once. Must stay well under the grace period.
CHANGELOG_FINISH_DELAY_SECONDS = env.float("CHANGELOG_FINISH_DELAY_SECONDS", default=0.05)
if not 0 <= CHANGELOG_FINISH_DELAY_SECONDS <= CHANGELOG_WORKER_GRACE_SECONDS / 4:
    raise ImproperlyConfigured(
        "CHANGELOG_FINISH_DELAY_SECONDS must be between 0 and a quarter of CHANGELOG_WORKER_GRACE_SECONDS "
        f"({CHANGELOG_WORKER_GRACE_SECONDS / 4:g} s): a longer wait lets the outbox worker deliver changes again"
    )
CHANGELOG_RETRY_MAX_SECONDS = env.float("CHANGELOG_RETRY_MAX_SECONDS", default=2.0)
CHANGELOG_MAX_ATTEMPTS = env.int("CHANGELOG_MAX_ATTEMPTS", default=100)
CHANGELOG_MAINTENANCE_SECONDS = env.float("CHANGELOG_MAINTENANCE_SECONDS", default=5.0)
CHANGELOG_ALERT_AGE_SECONDS = env.float("CHANGELOG_ALERT_AGE_SECONDS", default=30.0)
# How long the worker marks an org quiet once no deferred handler (push) has work for it:
# its changes are then done on the request thread. A safety bound: whatever gives a
# handler work ends the quiet period at once. 0 turns quiet marking off.
CHANGELOG_QUIET_SECONDS = env.float("CHANGELOG_QUIET_SECONDS", default=300.0)
# Test-only: a server process SIGKILLs itself right after a write's commit, before its
# handlers run (the crash the outbox exists for). Never set it in production.
CHANGELOG_CRASH_AFTER_COMMIT = env.bool("CHANGELOG_CRASH_AFTER_COMMIT", default=False)
# Test-only: a server process SIGKILLs itself when it is about to finish delivered outbox
# rows (their handlers ran; the rows are still there). Never set it in production.
CHANGELOG_CRASH_BEFORE_FINISH = env.bool("CHANGELOG_CRASH_BEFORE_FINISH", default=False)
SYNC_TOMBSTONE_DAYS = env.int("SYNC_TOMBSTONE_DAYS", default=90)
# A sync push applies its mutations in transactions that hold the org's lock for at most
# this long each (docs/sync.md "Push"): fewer commits, short waits for other writers.
SYNC_PUSH_TRANSACTION_MAX_MS = env.float("SYNC_PUSH_TRANSACTION_MAX_MS", default=50.0)

# --- Realtime (CONTRACT §5, docs/realtime.md) ---------------------------------------------
# Caps hold across all server processes (leases in Redis). A crashed process's slots
# are free again after at most REALTIME_LEASE_SECONDS, which must stay <= 60.
MAX_CONNECTIONS_PER_USER = env.int("MAX_CONNECTIONS_PER_USER", default=10)
MAX_CONNECTIONS_PER_ORG = env.int("MAX_CONNECTIONS_PER_ORG", default=1000)
REALTIME_LEASE_SECONDS = env.float("REALTIME_LEASE_SECONDS", default=30.0)
REALTIME_HEARTBEAT_SECONDS = env.float("REALTIME_HEARTBEAT_SECONDS", default=10.0)
REALTIME_STREAM_MAXLEN = env.int("REALTIME_STREAM_MAXLEN", default=1000)
REALTIME_STREAM_TTL_SECONDS = env.int("REALTIME_STREAM_TTL_SECONDS", default=86400)
REALTIME_SOCKET_QUEUE_SIZE = env.int("REALTIME_SOCKET_QUEUE_SIZE", default=256)
REALTIME_STATS_FLUSH_SECONDS = env.float("REALTIME_STATS_FLUSH_SECONDS", default=1.0)
# Each socket re-checks its token and membership this often: the backstop behind the
# revocation broadcast (realtime/access.py); token expiry closes a socket on time anyway.
REALTIME_ACCESS_RECHECK_SECONDS = env.float("REALTIME_ACCESS_RECHECK_SECONDS", default=30.0)
# --- Metrics and SLOs -------------------------------------------------------------------
# Sliding window of the SLO figures in /v1/system/metrics/aggregated, and how often each
# server process samples counters and pool gauges.
SLO_WINDOW_SECONDS = env.float("SLO_WINDOW_SECONDS", default=300.0)
METRICS_SAMPLE_INTERVAL_SECONDS = env.float("METRICS_SAMPLE_INTERVAL_SECONDS", default=5.0)
# django-prometheus: export the migrations gauges only when asked (they query the db).
PROMETHEUS_EXPORT_MIGRATIONS = env.bool("PROMETHEUS_EXPORT_MIGRATIONS", default=False)

# --- Push notifications (CONTRACT §11, docs/push.md) --------------------------------------
# Credentials: a kind whose credentials are empty cannot be registered (400). The local
# stack generates a VAPID key into .env and allows loopback push endpoints.
PUSH_VAPID_PRIVATE_KEY = env.str("PUSH_VAPID_PRIVATE_KEY", default="")
PUSH_VAPID_SUBJECT = env.str("PUSH_VAPID_SUBJECT", default="mailto:push@localhost")
# SSRF guard: a Web Push endpoint's host must equal one of these (a "*.domain" entry
# matches its subdomains); https only, except loopback hosts listed here (local stack).
PUSH_WEBPUSH_ALLOWED_HOSTS = env.list(
    "PUSH_WEBPUSH_ALLOWED_HOSTS",
    default=[
        "fcm.googleapis.com",
        "updates.push.services.mozilla.com",
        "web.push.apple.com",
        "*.notify.windows.com",
    ],
)
PUSH_FCM_PROJECT_ID = env.str("PUSH_FCM_PROJECT_ID", default="")
PUSH_FCM_CREDENTIALS_FILE = env.str("PUSH_FCM_CREDENTIALS_FILE", default="")
PUSH_FCM_ENDPOINT = env.str("PUSH_FCM_ENDPOINT", default="https://fcm.googleapis.com")
PUSH_APNS_KEY_FILE = env.str("PUSH_APNS_KEY_FILE", default="")
PUSH_APNS_KEY_ID = env.str("PUSH_APNS_KEY_ID", default="")
PUSH_APNS_TEAM_ID = env.str("PUSH_APNS_TEAM_ID", default="")
PUSH_APNS_TOPIC = env.str("PUSH_APNS_TOPIC", default="")
PUSH_APNS_ENDPOINT = env.str("PUSH_APNS_ENDPOINT", default="https://api.push.apple.com")
# Delivery (push_worker): retries, throttles, concurrency, bookkeeping.
PUSH_SYNC_MIN_INTERVAL_SECONDS = env.float("PUSH_SYNC_MIN_INTERVAL_SECONDS", default=30.0)
PUSH_MAX_ATTEMPTS = env.int("PUSH_MAX_ATTEMPTS", default=5)
PUSH_RETRY_BASE_SECONDS = env.float("PUSH_RETRY_BASE_SECONDS", default=2.0)
PUSH_RETRY_MAX_SECONDS = env.float("PUSH_RETRY_MAX_SECONDS", default=600.0)
PUSH_SEND_TIMEOUT_SECONDS = env.float("PUSH_SEND_TIMEOUT_SECONDS", default=10.0)
PUSH_LOST_AFTER_SECONDS = env.float("PUSH_LOST_AFTER_SECONDS", default=300.0)
PUSH_WORKER_CONCURRENCY = env.int("PUSH_WORKER_CONCURRENCY", default=32)
PUSH_WORKER_POLL_SECONDS = env.float("PUSH_WORKER_POLL_SECONDS", default=1.0)
PUSH_DELIVERY_RETENTION_DAYS = env.float("PUSH_DELIVERY_RETENTION_DAYS", default=7.0)
PUSH_TTL_SECONDS = env.int("PUSH_TTL_SECONDS", default=86400)
# The worker's own /metrics (Prometheus scrapes it as a second target); 0: none.
PUSH_WORKER_METRICS_PORT = env.int("PUSH_WORKER_METRICS_PORT", default=0)
