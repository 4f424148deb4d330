"""Benchmark variant: the project's own request-id and API metrics middleware, without
django-prometheus' HTTP middleware pair."""

from bench.settings_metrics_off import *  # noqa: F403
from config.settings import MIDDLEWARE as FULL_MIDDLEWARE

MIDDLEWARE = [m for m in FULL_MIDDLEWARE if not m.startswith("django_prometheus.")]
