"""Benchmark baseline: the project's settings without any metrics or request-id
middleware (and the bench URLs)."""

from config.settings import *  # noqa: F403
from config.settings import MIDDLEWARE

OBSERVABILITY_MIDDLEWARE = {
    "monitoring.request_id.RequestIdMiddleware",
    "monitoring.http_metrics.ApiMetricsMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
}
MIDDLEWARE = [m for m in MIDDLEWARE if m not in OBSERVABILITY_MIDDLEWARE]
ROOT_URLCONF = "bench.urls"
