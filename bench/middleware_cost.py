"""CPU cost per request of the Django request path for one settings module, without a
network or server in between: calls the WSGI handler directly for GET /bench/ping.

Run by bench/metrics_overhead.py in a fresh process per variant (settings and the
multiprocess mode are fixed at import time). Prints microseconds per request.
"""

import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.core.wsgi import get_wsgi_application

REQUESTS = int(os.environ.get("BENCH_INPROCESS_REQUESTS", "5000"))


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


def main() -> None:
    app = get_wsgi_application()

    def start_response(status: str, headers: list) -> None:
        assert status.startswith("200"), status

    for _ in range(500):  # warm-up
        b"".join(app(environ(), start_response))
    started = time.perf_counter()
    for _ in range(REQUESTS):
        b"".join(app(environ(), start_response))
    print(f"{(time.perf_counter() - started) / REQUESTS * 1e6:.1f}")


if __name__ == "__main__":
    main()
