"""Settings, all read from the environment (and `.env`, written by bin/stack).

Every setting has a safe default; README.md lists them all. Real environment variables
win over `.env`.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="insecure-local-development-key-set-SECRET_KEY-in-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "core",
    "accounts",
    "tenancy",
    "finance",
    "monitoring",
    "django_prometheus",
]

MIDDLEWARE = [
    # --- observability (outermost: ids and timings cover every other middleware) ---
    "monitoring.request_id.RequestIdMiddleware",
    "monitoring.http_metrics.ApiMetricsMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # --- end observability ---
    "corsheaders.middleware.CorsMiddleware",
    "core.compression.GZipMiddleware",
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


def database_config(url: str) -> dict:
    config = env.db_url_config(url)
    # django-prometheus' engine (psycopg 3 + pool aware) counts queries per alias.
    config["ENGINE"] = "django_prometheus.db.backends.postgresql"
    config["CONN_MAX_AGE"] = 0
    config.setdefault("OPTIONS", {})
    config["OPTIONS"].update(
        {
            "connect_timeout": DB_CONNECT_TIMEOUT_SECONDS,
            "options": f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}",
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

# --- Redis ----------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:56379/0")
REDIS_SOCKET_TIMEOUT_SECONDS = env.float("REDIS_SOCKET_TIMEOUT_SECONDS", default=0.25)

# --- Auth -----------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- HTTP limits and security ---------------------------------------------------------
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=32 * 1024 * 1024)
# The body limit is enforced before Django (config/body_limit.py); Django's own limit
# is aligned with it so a body the limiter let through is never refused a second time.
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
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
)
CORS_EXPOSE_HEADERS = ("idempotent-replayed", "retry-after", "x-request-id")
SECURE_CONTENT_TYPE_NOSNIFF = True
# TLS terminates at the edge; behind it, trust its X-Forwarded-Proto only when told to.
SECURE_COOKIES = env.bool("SECURE_COOKIES", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_COOKIES
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"

# --- REST framework -------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.DecimalJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
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
}

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

# --- Metrics and SLOs -------------------------------------------------------------------
# Sliding window of the SLO figures in /v1/system/metrics/aggregated, and how often each
# server process samples counters and pool gauges.
SLO_WINDOW_SECONDS = env.float("SLO_WINDOW_SECONDS", default=300.0)
METRICS_SAMPLE_INTERVAL_SECONDS = env.float("METRICS_SAMPLE_INTERVAL_SECONDS", default=5.0)
# django-prometheus: export the migrations gauges only when asked (they query the db).
PROMETHEUS_EXPORT_MIGRATIONS = env.bool("PROMETHEUS_EXPORT_MIGRATIONS", default=False)
