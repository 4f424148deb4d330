"""gunicorn settings for the REST API (WSGI). See README "Serving" for why WSGI.

Every value can be overridden with GUNICORN_CMD_ARGS or the variables below.

Metrics: several worker processes share one PROMETHEUS_MULTIPROC_DIR (prometheus_client
multiprocess mode). It is set here, before anything imports prometheus_client, emptied
when the server starts, and a dead worker's live gauges are dropped when it exits.
"""

import os
import re
import tempfile
from pathlib import Path
from typing import Any

# REST_PORT is internal: clients use the edge at PORT (bin/stack, README "Serving").
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('REST_PORT', '8002')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
keepalive = 5
timeout = int(os.environ.get("WEB_TIMEOUT_SECONDS", "30"))
graceful_timeout = 10
# A worker is replaced after this many requests (a hedge against slow leaks); 0: never.
max_requests = int(os.environ.get("WEB_MAX_REQUESTS", "10000"))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("ACCESS_LOG", "-") or None
errorlog = "-"
# One JSON object per request, with the id the app returned in X-Request-ID.
access_log_format = (
    '{"ts": "%(t)s", "logger": "access", "request_id": "%({x-request-id}o)s", '
    '"method": "%(m)s", "path": "%(U)s", "status": %(s)s, "bytes": "%(B)s", '
    '"duration_us": %(D)s, "remote": "%(h)s"}'
)


def default_metrics_dir() -> str:
    """A per-user, per-bind folder in the temp dir: two servers never share one."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", bind)
    return str(Path(tempfile.gettempdir()) / f"hospitality-metrics-{os.getuid()}" / name)


METRICS_DIR_IS_DEFAULT = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
METRICS_DIR = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", default_metrics_dir())


def prepare_metrics_dir(directory: str) -> None:
    """Create the folder (owner-only) and remove the previous run's metric files."""
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for folder in (path, path.parent):
        if folder.stat().st_uid != os.getuid() and folder.parent != folder:
            if folder == path.parent and folder == Path(tempfile.gettempdir()):
                continue
            raise RuntimeError(f"{folder} belongs to another user; set PROMETHEUS_MULTIPROC_DIR")
    for stale in path.glob("*.db"):
        stale.unlink()


def remove_metrics_dir(directory: str) -> None:
    path = Path(directory)
    for leftover in path.glob("*"):
        leftover.unlink()
    path.rmdir()


def on_starting(server: Any) -> None:
    prepare_metrics_dir(METRICS_DIR)
    from monitoring.slo_window import FileReadingStore

    FileReadingStore(METRICS_DIR).reset()


def post_worker_init(worker: Any) -> None:
    from config.warmup import freeze_warm_objects, warm_up_worker
    from monitoring.sampler import ensure_sampler_running

    warm_up_worker()
    freeze_warm_objects()
    ensure_sampler_running()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if METRICS_DIR_IS_DEFAULT:  # a folder we made up: leave nothing behind in /tmp
        remove_metrics_dir(METRICS_DIR)
