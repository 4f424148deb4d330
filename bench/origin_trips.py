"""What one request of each `make bench-origin` case sends to Postgres and Redis, and the
CPU it costs in this process (no server, no network client), by layer.

    .venv/bin/python bench/origin_trips.py        (needs the local stack: bin/stack up)

Round trips: every statement Django runs on each alias (with the function of ours that
ran it) and every command batch written to a Redis socket (a pipeline is one), for the
second request of each case (the first warms caches). CPU: process time per request with
the full middleware list, then without each middleware in turn (its marginal cost),
through one WSGI handler per list: BENCH_INPROCESS_REQUESTS requests per variant in 5
interleaved rounds, medians. A middleware whose removal breaks the request is skipped.
BENCH_MIDDLEWARE_MARGINS=0 measures the full list only (a quick before/after of a cut).
Last, Python function calls per request (cProfile, 50 requests of each case): a proxy of
the interpreter's share that the neighbours' load does not move.
"""

import cProfile
import http.client
import json
import os
import pstats
import statistics
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "1000000000")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

import httpx
import redis.connection
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from django.test.utils import CaptureQueriesContext

from bench.idempotency import make_tenant
from bench.wsgi_calls import wsgi_call, wsgi_environ

REQUESTS = int(os.environ.get("BENCH_INPROCESS_REQUESTS", "500"))
MARGINS = os.environ.get("BENCH_MIDDLEWARE_MARGINS", "1") != "0"
ROUNDS = 5
_redis_batches: list[tuple[str, str]] = []


def _ours() -> str:
    """The innermost function of ours (not Django's, not a library's) on the stack."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if str(ROOT) in frame.filename and ".venv" not in frame.filename and "bench/" not in frame.filename:
            return f"{Path(frame.filename).relative_to(ROOT)}:{frame.name}"
    return "?"


def _spy_on_redis() -> None:
    original = redis.connection.AbstractConnection.send_packed_command

    # command: the packed bytes, or a list of them (a pipeline)
    def send(self: redis.connection.AbstractConnection, command: Any, check_health: bool = True) -> None:
        first = command[0] if isinstance(command, list) else command
        words = bytes(first).split(b"\r\n")
        _redis_batches.append((words[2].decode() if len(words) > 2 else "?", _ours()))
        return original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = send  # type: ignore[method-assign]


def _spy_on_http() -> None:
    original = httpx.Client.send

    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        _redis_batches.append((f"HTTP {request.method}", _ours()))
        return original(self, request, **kwargs)

    httpx.Client.send = send  # type: ignore[method-assign]
    plain = http.client.HTTPConnection.request

    def request(self: http.client.HTTPConnection, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        _redis_batches.append((f"HTTP {method}", _ours()))  # the Varnish purge's keep-alive client
        plain(self, method, url, *args, **kwargs)

    http.client.HTTPConnection.request = request  # type: ignore[method-assign]


def main() -> None:
    org, prop, token = make_tenant()
    body = json.dumps({"property_id": str(prop.id), "amount": "12.50", "currency": "EUR", "category": "bench",
                       "occurred_on": "2026-11-01"}).encode()  # fmt: skip
    base = f"/v1/orgs/{org.id}"
    handler = WSGIHandler()
    for _ in range(20):
        assert wsgi_call(handler, wsgi_environ("POST", f"{base}/expenses", token, body))
    from finance.models import Expense

    entry = Expense.objects.filter(org=org).values_list("id", flat=True).first()
    cases: dict[str, Callable[[], dict]] = {
        "create": lambda: wsgi_environ("POST", f"{base}/expenses", token, body, key=f"k-{uuid.uuid4()}"),
        "list": lambda: wsgi_environ("GET", f"{base}/expenses?page_size=20", token),
        "detail": lambda: wsgi_environ("GET", f"{base}/expenses/{entry}", token),
        "summary": lambda: wsgi_environ("GET", f"{base}/finance/summary", token),
    }
    unspied = (
        redis.connection.AbstractConnection.send_packed_command,
        httpx.Client.send,
        http.client.HTTPConnection.request,
    )
    _spy_on_redis()
    _spy_on_http()
    for name, make in cases.items():
        assert wsgi_call(handler, make())
        _redis_batches.clear()
        captures = [CaptureQueriesContext(connections[alias]) for alias in connections]
        for capture in captures:
            capture.__enter__()
        assert wsgi_call(handler, make())
        for capture in captures:
            capture.__exit__(None, None, None)
        statements = [(alias, q["sql"]) for alias, c in zip(connections, captures, strict=True) for q in c]
        print(
            f"\n== {name}: {len(statements)} Postgres statements, {len(_redis_batches)} Redis (or HTTP) round trips"
        )
        for alias, sql in statements:
            print(f"  pg {alias:8} {' '.join(sql.split())[:110]}")
        for command, caller in _redis_batches:
            print(f"  redis {command:10} from {caller}")
    # The spies walk the stack on every round trip: not part of what a request costs.
    (
        redis.connection.AbstractConnection.send_packed_command,  # type: ignore[method-assign]
        httpx.Client.send,  # type: ignore[method-assign]
        http.client.HTTPConnection.request,  # type: ignore[method-assign]
    ) = unspied
    print(f"\nCPU per request in this process ({REQUESTS} requests each; marginal cost of each middleware):")
    full = list(settings.MIDDLEWARE)
    variants = {"all middleware": full}
    if MARGINS:
        variants |= {f"without {m.rsplit('.', 1)[1]}": [x for x in full if x != m] for m in full}
    handlers = {}
    for variant, middleware in variants.items():
        settings.MIDDLEWARE = middleware
        handlers[variant] = WSGIHandler()
    settings.MIDDLEWARE = full
    for name, make in cases.items():
        usable = {v: h for v, h in handlers.items() if all([wsgi_call(h, make()) for _ in range(10)])}
        runs: dict[str, list[float]] = {variant: [] for variant in usable}
        for _ in range(ROUNDS):  # interleaved, so a neighbour's load hits every variant alike
            for variant, variant_handler in usable.items():
                started = time.process_time()
                for _ in range(REQUESTS // ROUNDS):
                    wsgi_call(variant_handler, make())
                runs[variant].append(1000 * (time.process_time() - started) / (REQUESTS // ROUNDS))
        costs = {variant: statistics.median(values) for variant, values in runs.items()}
        total = costs["all middleware"]
        print(f"  {name:8} {total:.2f} ms; " + ", ".join(
            f"{v.removeprefix('without ')} {total - c:+.2f}" for v, c in costs.items() if v != "all middleware"
        ))  # fmt: skip
    _print_calls_per_request(handlers["all middleware"], cases)


def _print_calls_per_request(handler: WSGIHandler, cases: dict[str, Callable[[], dict]]) -> None:
    print("\nPython function calls per request (cProfile, 50 requests each):")
    for name, make in cases.items():
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(50):
            wsgi_call(handler, make())
        profile.disable()
        print(f"  {name:8} {pstats.Stats(profile).total_calls / 50:.0f}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
