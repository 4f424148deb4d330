"""Re-running a replica read elsewhere when the replica fails before any row came back.

Two kinds of failure are retried:
- connection: the replica is unreachable (connect error, pool timeout), its server
  went away mid-statement, or it hung and the watchdog cut the connection. Its
  breaker opens; the read runs on another usable replica, or on the primary once
  this request has already read from a replica (never back in time);
- conflict: SQLSTATE 40001, a hot-standby query cancelled by WAL replay. The replica is
  healthy; the statement runs once more on the primary, which has no such conflicts.

Anything else (bad SQL, a statement timeout, a failure after rows were fetched) is
raised as it would be without replicas.
"""

import contextlib
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connections

from core.db_errors import is_connection_failure
from replicas.conf import replica_settings
from replicas.context import current_routing
from replicas.pools import discard_pool
from replicas.replica_set import replica_set
from replicas.stats import routing_stats
from replicas.watchdog import watchdog

CONNECTION, CONFLICT = "connection", "conflict"


def failure_kind(exc: BaseException) -> str | None:
    cause = exc.__cause__ or exc
    if getattr(cause, "sqlstate", None) == "40001":
        return CONFLICT
    return CONNECTION if is_connection_failure(exc) else None


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc.__cause__ or exc).__name__}: {text}"[:200]


def cursor_elsewhere(failed_alias: str, kind: str, exc: BaseException, *, chunked: bool) -> Any:
    """A cursor on the alias that takes over from `failed_alias`."""
    from replicas.router import failover_alias

    if kind == CONNECTION:
        replica_set().record_failure(failed_alias, describe(exc))
        discard_pool(failed_alias)
    target = failover_alias(failed_alias, reason=kind, to_primary=kind == CONFLICT)
    connection = connections[target]
    return connection.chunked_cursor() if chunked else connection.cursor()


class FailoverCursor:
    """Wraps a replica's Django cursor; delegates everything, guards execute()."""

    def __init__(self, inner: Any, alias: str, *, chunked: bool) -> None:
        self._inner = inner
        self._alias = alias
        self._chunked = chunked
        self._guarding = True  # False once the statement has moved elsewhere
        self._fetched = False

    def execute(self, sql: str, params: Any = None) -> Any:
        return self._run(lambda cursor: cursor.execute(sql, params))

    def executemany(self, sql: str, param_list: Any) -> Any:
        return self._run(lambda cursor: cursor.executemany(sql, param_list))

    def _run(self, statement: Callable[[Any], Any]) -> Any:
        if not self._guarding:
            return statement(self._inner)
        try:
            socket = self._inner.db.connection.pgconn.socket
            with watchdog.guard(socket, replica_settings().read_timeout_seconds, self._alias):
                result = statement(self._inner)
        except DatabaseError as exc:
            kind = failure_kind(exc)
            if kind is None or self._fetched:
                raise
            self._close_failed()
            self._inner = cursor_elsewhere(self._alias, kind, exc, chunked=self._chunked)
            self._guarding = False
            return statement(self._inner)
        state = current_routing()
        if state is not None:
            state.note_served(self._alias)
        routing_stats.replica_query(self._alias)
        return result

    def _close_failed(self) -> None:
        db = self._inner.db
        with contextlib.suppress(Exception):  # the connection is already broken
            self._inner.close()
        with contextlib.suppress(Exception):
            db.close()  # hands a broken connection back to the pool, which discards it

    def fetchone(self) -> Any:
        self._fetched = True
        return self._inner.fetchone()

    def fetchmany(self, size: int | None = None) -> Any:
        self._fetched = True
        return self._inner.fetchmany(size) if size is not None else self._inner.fetchmany()

    def fetchall(self) -> Any:
        self._fetched = True
        return self._inner.fetchall()

    def __iter__(self) -> Any:
        self._fetched = True
        return iter(self._inner)

    def __enter__(self) -> "FailoverCursor":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
