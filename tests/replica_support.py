"""Helpers for the read-replica tests: drive the local stack's real standbys (pause
replay, stop, SIGSTOP) and wait for replication, always undoing what they did."""

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
from django.db import connections

from replicas.pools import connection_pools
from tests.pinned_env import stack_environ

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "bin" / "stack"
REPLICAS = ("replica1", "replica2")

T = TypeVar("T")


def stack(*args: str) -> None:
    subprocess.run(
        [str(STACK), *args], check=True, capture_output=True, timeout=120, cwd=ROOT, env=stack_environ()
    )


def url_of(alias: str) -> str:
    p = connections.settings[alias]
    return f"postgres://{p['USER']}@{p['HOST']}:{p['PORT']}/{p['NAME']}"


def replica_urls() -> str:
    return ",".join(url_of(alias) for alias in REPLICAS)


def connect(alias: str) -> psycopg.Connection:
    p = connections.settings[alias]
    return psycopg.connect(
        host=p["HOST"], port=p["PORT"], user=p["USER"], dbname=p["NAME"], autocommit=True, connect_timeout=3
    )


def sql(alias: str, query: str, params: tuple = ()) -> tuple | None:
    with connect(alias) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchone() if cursor.description else None


def row(alias: str, query: str, params: tuple = ()) -> tuple[Any, ...]:
    """The first row of a query that returns one (a SELECT of aggregates or functions)."""
    found = sql(alias, query, params)
    assert found is not None, f"no row from {query!r}"
    return found


def wait_until(
    predicate: Callable[[], T | Literal[False] | None], timeout: float = 15.0, interval: float = 0.05
) -> T:
    """The predicate's first truthy value, asked every `interval` seconds up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def replica_is_up(alias: str) -> bool:
    try:
        return bool(row(alias, "SELECT pg_is_in_recovery()")[0])
    except psycopg.Error:
        return False


def wait_caught_up(aliases: tuple[str, ...] = REPLICAS, timeout: float = 15.0) -> None:
    target = int(row("default", "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0])

    def caught_up() -> bool:
        try:
            return all(
                int(row(a, "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn")[0]) >= target for a in aliases
            )
        except psycopg.errors.SerializationFailure:
            # A standby resuming replay may cancel even this query ("conflict with
            # recovery"): not caught up yet, ask again.
            return False

    try:
        wait_until(caught_up, timeout)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}: {_replication_report(aliases, target)}") from None


def _replication_report(aliases: tuple[str, ...], target: int) -> str:
    """Where each standby stands against `target`, and what its replay waits on."""
    parts = [f"primary position {target}"]
    for alias in aliases:
        try:
            replay, received, pause, waits_on = row(
                alias,
                "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn, pg_last_wal_receive_lsn() - '0/0'::pg_lsn,"
                " pg_get_wal_replay_pause_state(), (SELECT wait_event_type || ':' || wait_event"
                " FROM pg_stat_activity WHERE backend_type = 'startup')",
            )
            parts.append(
                f"{alias} replayed {replay} received {received} replay {pause} waiting on {waits_on}"
            )
        except psycopg.Error as error:
            parts.append(f"{alias}: {error}")
    return "; ".join(parts)


def ensure_replicas_running() -> None:
    for n, alias in enumerate(REPLICAS, start=1):
        if not replica_is_up(alias):
            stack("pg-replica-start", str(n))
        wait_until(partial(replica_is_up, alias), 30)
        replay_resume(alias)


@contextmanager
def replay_paused(alias: str) -> Iterator[None]:
    sql(alias, "SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        replay_resume(alias)


def replay_resume(alias: str) -> None:
    """Resume WAL replay. Replay held paused longer than the standby's
    max_standby_streaming_delay resumes by cancelling conflicting queries at once, the
    resuming statement's own included (SQLSTATE 40001, after the resume took effect):
    so the state is checked rather than the statement's outcome."""
    for _ in range(20):
        with suppress(psycopg.errors.SerializationFailure, psycopg.errors.QueryCanceled):
            sql(alias, "SELECT pg_wal_replay_resume()")
        with suppress(psycopg.errors.SerializationFailure, psycopg.errors.QueryCanceled):
            paused = sql(alias, "SELECT pg_is_wal_replay_paused()")
            if paused is not None and not paused[0]:
                return
        time.sleep(0.1)
    raise AssertionError(f"WAL replay on {alias} did not resume")


@contextmanager
def replica_stopped(alias: str) -> Iterator[None]:
    n = str(REPLICAS.index(alias) + 1)
    # A restartpoint first, so the crash recovery at restart replays seconds of WAL,
    # not everything since the last one (test database creations included).
    sql("default", "CHECKPOINT")
    wait_caught_up((alias,))
    sql(alias, "CHECKPOINT")
    stack("pg-replica-stop", n)  # pg_ctl stop -m immediate
    try:
        yield
    finally:
        if not replica_is_up(alias):
            stack("pg-replica-start", n)


def _stack_state() -> dict[str, str]:
    lines = (ROOT / ".stack" / "stack.state").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def server_pids(alias: str) -> list[int]:
    """The server's postmaster and all its children (backends, startup, walreceiver);
    alias is "primary" or a replica's."""
    data_dir = Path(_stack_state()["PG_ROOT"]) / alias
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == postmaster:  # field 4 of /proc/PID/stat: the parent pid
            children.append(int(stat.parent.name))
    return [postmaster, *children]


@contextmanager
def server_hung(alias: str) -> Iterator[None]:
    """Freeze every process of the server (SIGSTOP); always thawed afterwards."""
    pids = server_pids(alias)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def point_replicas_at_test_database() -> None:
    """Every cluster's replicas (CLUSTER_COUNT=2 in .env adds c2's): the test database
    their own primary made, on their own server."""
    from replicas.topology import topology

    for alias in topology().replica_aliases:
        mirror = connections.settings[alias].get("TEST", {}).get("MIRROR") or "default"
        test_name = connections[mirror].settings_dict["NAME"]
        params = connections.settings[alias]  # the same dict as settings.DATABASES[alias]
        params["NAME"] = test_name
        connection = connections[alias]
        connection.close()
        connection.settings_dict = params  # undo the mirror's switch to the primary
        pool = connection_pools().pop(alias, None)
        if pool is not None:
            pool.close()


def close_all_pools() -> None:
    """Close every alias's pool (threads leave idle connections in them), so the test
    database can be dropped."""
    for alias, pool in list(connection_pools().items()):
        pool.close()
        connection_pools().pop(alias, None)
