"""Microseconds per metric operation the request middleware performs, in multiprocess
mode (mmapped files), measured alone: counter inc, histogram observe, request id.

Run by bench/metrics_overhead.py with PROMETHEUS_MULTIPROC_DIR set to a scratch folder.
"""

import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitoring.metrics import api_request_duration, api_requests

OPERATIONS = 50000


def per_call_us(operation: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(OPERATIONS):
        operation()
    return (time.perf_counter() - started) / OPERATIONS * 1e6


def main() -> None:
    labels = ("/v1/orgs/<uuid:org_id>/expenses", "GET", "2xx")
    print(f"counter inc       {per_call_us(lambda: api_requests.labels(*labels).inc()):6.2f} us")
    print(
        f"histogram observe {per_call_us(lambda: api_request_duration.labels(*labels).observe(0.01)):6.2f} us"
    )
    print(f"request id (uuid4){per_call_us(lambda: uuid.uuid4().hex):6.2f} us")


if __name__ == "__main__":
    main()
