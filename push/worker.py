"""The push worker: claims due deliveries and sends them, PUSH_WORKER_CONCURRENCY at a
time, on a thread pool (sends wait on the network; the main thread alone touches the
database). It wakes on the fan-out's NOTIFY, on a finished send, or at the next due
time (at most PUSH_WORKER_POLL_SECONDS later), so a new delivery leaves within
milliseconds of its commit. Several workers may run: SKIP LOCKED splits the rows.

Every worker drains every cluster's primary (deliveries live on the org's cluster),
as the outbox worker does: one LISTEN connection per primary, and the free send slots
offered to the clusters in turn, starting with a different one each round, so a
cluster with a deep queue cannot starve another. One pool of workers serves any
number of clusters, and a cluster added to DATABASE_CLUSTERS is drained by the next
deploy without a new process to run (docs/push.md, docs/clusters.md).
"""

import logging
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone

from push import metrics
from push.delivery import (
    Claimed,
    deliveries_claim,
    deliveries_mark_lost,
    deliveries_prune,
    deliveries_record,
    queue_state,
)
from push.fanout import NOTIFY_CHANNEL
from push.senders.outgoing import Outcome, SendResult
from push.senders.registry import SENDERS
from replicas.topology import topology

logger = logging.getLogger(__name__)
HOUSEKEEPING_SECONDS = 5.0
GAUGE_SECONDS = 0.5


def send_one(claimed: Claimed) -> SendResult:
    try:
        return SENDERS[claimed.outgoing.kind](claimed.outgoing)
    except Exception as error:  # a bug or a credential problem: never resent blindly
        logger.exception("push send %s failed", claimed.outgoing.delivery_id)
        return SendResult(Outcome.REJECTED, error=f"sender error: {type(error).__name__}")


class NotificationListener(threading.Thread):
    """LISTEN on its own autocommit connection to one primary; sets `wake` on every
    NOTIFY. Reconnects after a database restart (the poll interval covers the gap)."""

    def __init__(self, database: str, wake: threading.Event, stopping: threading.Event) -> None:
        super().__init__(name=f"push-listen-{database}", daemon=True)
        self.database, self.wake, self.stopping = database, wake, stopping

    def run(self) -> None:
        params = connections[self.database].get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        while not self.stopping.is_set():
            try:
                with psycopg.connect(**params, autocommit=True) as listen:
                    listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.wake.set()  # anything queued while we were not listening
                    while not self.stopping.is_set():
                        for _ in listen.notifies(timeout=1.0):
                            self.wake.set()
            except psycopg.Error as error:
                logger.warning("push worker: LISTEN on %s lost (%s); reconnecting", self.database, error)
                self.stopping.wait(1.0)


class PushWorker:
    def __init__(self, *, concurrency: int | None = None) -> None:
        self.concurrency = concurrency or settings.PUSH_WORKER_CONCURRENCY
        self.databases = sorted(topology().primaries)
        self.round = 0
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="push-send")
        self.in_flight: dict[Future, Claimed] = {}
        self.next_housekeeping = 0.0
        self.next_gauges = 0.0

    def stop(self, *_: Any) -> None:
        self.stopping.set()
        self.wake.set()

    def _on_done(self, _: Future) -> None:
        self.wake.set()

    def _record_finished(self) -> None:
        """Record the finished sends, one batch per cluster; a cluster that does not
        answer keeps its sends in flight, the others' are recorded and let go."""
        finished: dict[str, list[Future]] = {}
        for future, claimed in self.in_flight.items():
            if future.done():
                finished.setdefault(claimed.database, []).append(future)
        for database, here in sorted(finished.items()):
            try:
                deliveries_record(outcomes=[(self.in_flight[f], f.result()) for f in here])
            except DatabaseError as error:  # kept in flight: recorded once the cluster answers
                logger.warning("push worker: recording on %s failed (%s); retrying", database, error)
                connections[database].close()
                continue
            for future in here:
                del self.in_flight[future]

    def _claim_and_send(self) -> None:
        free = self.concurrency - len(self.in_flight)
        # Under load, claim in batches (a quarter of the slots) rather than one row per
        # finished send: one claiming transaction serves many sends.
        if self.stopping.is_set() or free == 0 or (self.in_flight and free < max(1, self.concurrency // 4)):
            return
        self.round += 1
        start = self.round % len(self.databases)
        for database in self.databases[start:] + self.databases[:start]:
            if free <= 0:
                break
            try:
                batch = deliveries_claim(limit=free, database=database)
            except DatabaseError as error:  # one cluster away: the others' sends go on
                logger.warning("push worker: claiming on %s failed (%s); retrying", database, error)
                connections[database].close()
                continue
            for claimed in batch:
                future = self.pool.submit(send_one, claimed)
                self.in_flight[future] = claimed
                future.add_done_callback(self._on_done)
                free -= 1

    def _housekeeping(self) -> float:
        """Mark lost rows and prune old ones (every few seconds), refresh the queue
        gauges; returns how long to sleep at most before something is due."""
        now = time.monotonic()
        if now >= self.next_housekeeping:
            for database in self.databases:
                try:
                    deliveries_mark_lost(database=database)
                    deliveries_prune(database=database)
                except DatabaseError as error:
                    logger.warning("push worker: housekeeping of %s failed (%s)", database, error)
                    connections[database].close()
            self.next_housekeeping = now + HOUSEKEEPING_SECONDS
        depth, earliest = 0, None
        for database in self.databases:
            try:
                count, due = queue_state(database=database)
            except DatabaseError as error:
                logger.warning("push worker: queue state of %s unknown (%s)", database, error)
                connections[database].close()
                continue
            depth += count
            if due is not None and (earliest is None or due < earliest):
                earliest = due
        wall_now = timezone.now()
        metrics.push_queue_depth.set(depth)
        overdue = (wall_now - earliest).total_seconds() if earliest else 0.0
        metrics.push_queue_oldest_due_seconds.set(max(0.0, overdue))
        wait = settings.PUSH_WORKER_POLL_SECONDS
        if earliest is not None:
            wait = min(wait, max(0.0, -overdue))
        return wait

    def run_forever(self) -> None:
        metrics.touch_label_sets()
        listeners = [NotificationListener(database, self.wake, self.stopping) for database in self.databases]
        for listener in listeners:
            listener.start()
        logger.info(
            "push worker started (concurrency %s, databases %s)", self.concurrency, ", ".join(self.databases)
        )
        while not (self.stopping.is_set() and not self.in_flight):
            self.wake.clear()
            wait = settings.PUSH_WORKER_POLL_SECONDS
            try:
                close_old_connections()
                self._record_finished()
                self._claim_and_send()
                if not self.in_flight or time.monotonic() >= self.next_gauges:
                    wait = self._housekeeping()  # when idle: also tells when the next row is due
                    self.next_gauges = time.monotonic() + GAUGE_SECONDS
            except DatabaseError as error:  # the database restarts: keep the sends, try again
                logger.warning("push worker: database error (%s); retrying", error)
                for database in self.databases:
                    connections[database].close()
                wait = 1.0
            self.wake.wait(timeout=wait)
        self.pool.shutdown(wait=True)
        for listener in listeners:
            listener.join(timeout=2.0)
        logger.info("push worker stopped")


def serve_metrics() -> None:
    """The worker is not behind gunicorn's scrape: it answers its own, on loopback."""
    port = settings.PUSH_WORKER_METRICS_PORT
    if port:
        from prometheus_client import start_http_server

        from monitoring.exposition import metrics_source

        start_http_server(port, addr="127.0.0.1", registry=metrics_source())
        logger.info("push worker metrics on http://127.0.0.1:%s/metrics", port)


def run_worker() -> None:
    # One INFO line per HTTP request would cost more CPU than the send's own bookkeeping.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    serve_metrics()
    worker = PushWorker()
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run_forever()
