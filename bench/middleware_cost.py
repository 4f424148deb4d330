"""CPU cost per request of the Django request path with and without each metrics
middleware, without a network or server in between: one process builds one WSGI
handler per middleware list and calls them in interleaved rounds for
GET /bench/ping, so load on a shared machine hits every variant alike.

Run by bench/metrics_overhead.py (PROMETHEUS_MULTIPROC_DIR set: multiprocess mode).
"""

import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_metrics_on")

import django

django.setup()

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

from bench.settings_metrics_off import OBSERVABILITY_MIDDLEWARE

REQUESTS = int(os.environ.get("BENCH_INPROCESS_REQUESTS", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
REQUEST_ID = "monitoring.request_id.RequestIdMiddleware"
API_METRICS = "monitoring.http_metrics.ApiMetricsMiddleware"


def variants() -> dict[str, list[str]]:
    full = list(settings.MIDDLEWARE)
    return {
        "metrics off (baseline)": [m for m in full if m not in OBSERVABILITY_MIDDLEWARE],
        "+ request id": [m for m in full if m not in OBSERVABILITY_MIDDLEWARE or m == REQUEST_ID],
        "+ api metrics (project)": [m for m in full if not m.startswith("django_prometheus.")],
        "+ django-prometheus (all)": full,
    }


def environ() -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/bench/ping",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }


def start_response(
    status: str, headers: list[tuple[str, str]], exc_info: object = None
) -> Callable[[bytes], object]:
    assert status.startswith("200"), status
    return _discard


def _discard(data: bytes) -> None:
    """The `write` callable start_response returns (Django never calls it)."""


def main() -> None:
    handlers = {}
    for name, middleware in variants().items():
        settings.MIDDLEWARE = middleware
        handlers[name] = WSGIHandler()
    timings: dict[str, list[float]] = {name: [] for name in handlers}
    for _ in range(ROUNDS):
        for name, handler in handlers.items():
            for _ in range(200):  # warm-up
                b"".join(handler(environ(), start_response))
            started = time.perf_counter()
            for _ in range(REQUESTS):
                b"".join(handler(environ(), start_response))
            timings[name].append((time.perf_counter() - started) / REQUESTS * 1e6)
    baseline = statistics.median(timings["metrics off (baseline)"])
    for name, runs in timings.items():
        cost = statistics.median(runs)
        print(f"{name:28s} {cost:7.1f} us/request  (+{cost - baseline:5.1f} us over baseline)")


if __name__ == "__main__":
    main()
