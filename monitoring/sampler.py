"""A daemon thread per server process that, every METRICS_SAMPLE_INTERVAL_SECONDS,
refreshes this process's pool gauges and appends an SLO reading (one process takes
each interval's reading; the others find it fresh and skip, without collecting)."""

import logging
import os
import threading
import time

from django.conf import settings
from django.db import DatabaseError, close_old_connections

from changelog.maintenance import outbox_gauges_refresh
from monitoring.metric_reading import take_reading
from monitoring.pool_gauges import refresh_pool_gauges
from monitoring.slo_window import reading_store

logger = logging.getLogger("monitoring.sampler")

_lock = threading.Lock()
_running_in_pid: int | None = None


def sample_once(now: float | None = None) -> None:
    refresh_pool_gauges()
    try:
        outbox_gauges_refresh()  # depth and oldest age of the org change log's outbox
    except DatabaseError:
        logger.warning("metrics sampler: could not read the outbox", exc_info=True)
    interval = settings.METRICS_SAMPLE_INTERVAL_SECONDS
    reading_store().append_taken(
        time.time() if now is None else now,
        take_reading,  # only when no other process took this interval's reading
        min_spacing=interval * 0.8,
        keep_seconds=settings.SLO_WINDOW_SECONDS + 2 * interval,
    )


def sample_and_release() -> None:
    """One pass of the sampler's thread. Its database connections go back after each
    pass, as a request's do: one the primary dropped (a restart, a failover) is not
    kept, so the next pass connects afresh instead of failing on it for the life of
    the process."""
    try:
        sample_once()
    except Exception:  # the sampler must outlive any one bad sample
        logger.exception("metrics sampler: sample failed")
    finally:
        close_old_connections()


def _run() -> None:
    while True:
        time.sleep(settings.METRICS_SAMPLE_INTERVAL_SECONDS)
        sample_and_release()


def ensure_sampler_running() -> None:
    """Start the sampler in this process unless it already runs here (fork-aware)."""
    global _running_in_pid  # noqa: PLW0603 (one sampler per process)
    with _lock:
        if _running_in_pid == os.getpid():
            return
        threading.Thread(target=_run, name="metrics-sampler", daemon=True).start()
        _running_in_pid = os.getpid()
