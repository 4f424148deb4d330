"""The lag and health checker: off the request path, one per server process.

Every `check_period_seconds` (REPLICA_HEALTH_CHECK_INTERVAL, but at least four times
per critical-lag window) it samples, per cluster, the primary's flushed WAL position
and then each replica's replay position, and derives:

- lag_bytes: primary position - replay position (0 when the replica has replayed all
  the primary had flushed when sampled);
- lag_seconds: 0 when caught up; else the smaller of two upper bounds on staleness:
  the age of the newest primary sample the replica has fully replayed, and the age of
  the last transaction it replayed (`pg_last_xact_replay_timestamp()`).

The checker uses its own plain psycopg connections (not the request pools), a short
connect timeout and the watchdog, so a dead or hung server costs it at most ~2 s and
never costs a request anything. It starts lazily, on the first routed read.
"""

import logging
import os
import threading
import time
from typing import Any

import psycopg
from django.db import connections

from replicas.conf import replica_settings
from replicas.pools import discard_pool
from replicas.replica_set import ReplicaSet, replica_set
from replicas.topology import Cluster
from replicas.watchdog import watchdog

logger = logging.getLogger("replicas.checker")

_PRIMARY_SQL = "SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn"
_REPLICA_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() - '0/0'::pg_lsn, "
    "EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())"
)


def connection_kwargs(alias: str) -> dict[str, Any]:
    params = connections.settings[alias]
    kwargs: dict[str, Any] = {
        "dbname": params["NAME"],
        "user": params["USER"] or None,
        "password": params["PASSWORD"] or None,
        "host": params["HOST"] or None,
        "port": params["PORT"] or None,
        "connect_timeout": 2,  # libpq's minimum
        "application_name": "replicas-checker",
        "autocommit": True,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:200]


class Checker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[str, psycopg.Connection] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stop = threading.Event()
        self.checks_run = 0

    # --- the background thread ----------------------------------------------------------
    def ensure_running(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            if self._pid != os.getpid():
                self._connections = {}  # inherited over fork: not ours to use
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="replicas-checker", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_now()
            except Exception:
                logger.exception("replicas: checker round failed")
            self._stop.wait(replica_settings().check_period_seconds)

    def stop(self) -> None:
        """Stop the thread and close its connections (tests, before dropping databases)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            for alias in list(self._connections):
                self._discard(alias)

    # --- one round -------------------------------------------------------------------------
    def check_now(self) -> ReplicaSet:
        """Check every cluster now (serialised with the background thread)."""
        replicas = replica_set()
        with self._lock:
            for cluster in replicas.topology.clusters.values():
                self._check_cluster(replicas, cluster)
            self.checks_run += 1
        return replicas

    def _check_cluster(self, replicas: ReplicaSet, cluster: Cluster) -> None:
        primary_lsn: int | None = None
        try:
            primary_lsn = int(self._fetch(cluster.primary, _PRIMARY_SQL)[0])
            replicas.record_primary(cluster.name, flush_lsn=primary_lsn, error=None)
        except Exception as exc:
            replicas.record_primary(cluster.name, flush_lsn=None, error=_short(exc))
        sampled_at = time.monotonic()
        history = replicas.primaries[cluster.name]
        for alias in cluster.replicas:
            try:
                in_recovery, replay, replay_age = self._fetch(alias, _REPLICA_SQL)
            except Exception as exc:
                replicas.record_check(
                    alias,
                    replay_lsn=None,
                    lag_seconds=None,
                    lag_bytes=None,
                    data_as_of=None,
                    error=_short(exc),
                )
                continue
            if not in_recovery or replay is None:
                error = "not a standby (promoted?)" if not in_recovery else "no replay position yet"
                replicas.record_check(
                    alias, replay_lsn=None, lag_seconds=None, lag_bytes=None, data_as_of=None, error=error
                )
                continue
            replay = int(replay)
            now = time.monotonic()
            lag_seconds: float | None
            lag_bytes: int | None
            data_as_of: float | None
            if primary_lsn is not None and replay >= primary_lsn:
                lag_seconds, lag_bytes, data_as_of = 0.0, 0, sampled_at
            else:
                bounds = [now - t for t in [history.data_as_of(replay)] if t is not None]
                if replay_age is not None:
                    bounds.append(max(0.0, float(replay_age)))
                lag_seconds = min(bounds) if bounds else None
                data_as_of = now - lag_seconds if lag_seconds is not None else None
                lag_bytes = max(0, primary_lsn - replay) if primary_lsn is not None else None
            joined = replicas.record_check(
                alias,
                replay_lsn=replay,
                lag_seconds=lag_seconds,
                lag_bytes=lag_bytes,
                data_as_of=data_as_of,
                error=None,
            )
            if joined:
                discard_pool(alias)

    def _fetch(self, alias: str, sql: str) -> tuple:
        """Run `sql` on `alias`; one retry on a fresh connection (the old one may be
        from before a restart); bounded by the connect timeout and the watchdog."""
        timeout = replica_settings().check_timeout_seconds
        for attempt in (1, 2):
            conn = self._connections.get(alias)
            try:
                if conn is None or conn.closed:
                    conn = self._connections[alias] = psycopg.connect(**connection_kwargs(alias))
                with watchdog.guard(conn.pgconn.socket, timeout, f"{alias} (health check)"):
                    row = conn.execute(sql).fetchone()
                assert row is not None  # the checks' queries answer one row
                return tuple(row)
            except psycopg.Error:
                self._discard(alias)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _discard(self, alias: str) -> None:
        conn = self._connections.pop(alias, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("replicas: closing checker connection to %s failed", alias)


checker = Checker()
