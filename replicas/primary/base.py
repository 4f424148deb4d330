"""Database backend for primary aliases (ENGINE "replicas.primary"): django-prometheus'
instrumented PostgreSQL backend, made to ride out a primary restart or hang.

- Pooled connections are checked when handed out, with a deadline (replicas/pools.py),
  unless they answered within DB_CHECK_SKIP_SECONDS and nothing waits on their socket.
  A connection that died with the server is never used: its siblings in the pool most
  likely died with it (a restart), so the pool is replaced and the connection comes
  from the fresh one.
- A statement that fails on a connection error as the first statement since the
  connection was handed out is run once more on a fresh connection, when that is
  certainly safe: inside a transaction (which then cannot have committed) or a
  SELECT. Anything later fails as usual (the request answers 503, core/errors.py).
- Every statement has a client-side deadline (the server's statement_timeout plus
  DB_STATEMENT_DEADLINE_MARGIN_SECONDS), enforced by the watchdog: a hung server fails
  the statement with a connection error instead of holding the request forever.
- Connection failures feed the primary's breaker (replicas/primary_outage.py), which
  refuses new connections at once while the primary is down.
- A COMMIT reads the primary's WAL insert position in the same round trip
  (`commit_position_take`): the read-your-writes position a write's request records
  right after its commit, without a statement of its own.
"""

import re
from contextlib import suppress
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.backends.utils import debug_transaction
from django_prometheus.db.backends.postgresql.base import DatabaseWrapper as PostgresDatabaseWrapper
from psycopg.pq import TransactionStatus

from core.db_errors import is_connection_failure
from replicas import primary_outage
from replicas.pools import check_within_deadline, discard_pool, mark_alive, recently_alive
from replicas.watchdog import watchdog

_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
# One simple-protocol message: the COMMIT, then (in an implicit transaction of its own)
# the insert position, at or past the end of the commit record.
_COMMIT_WITH_POSITION = "COMMIT; SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"


def statement_reads_only(sql: str) -> bool:
    """A SELECT or SHOW, or a WITH query none of whose parts writes (a finance create is
    one WITH statement that inserts): a statement that may run twice outside a
    transaction. Conservative: a SELECT ... FOR UPDATE in a WITH counts as a write."""
    head = sql.lstrip()[:6].upper()
    if head.startswith(("SELECT", "SHOW")):
        return True
    return head.startswith("WITH") and _WRITES.search(sql) is None


class DatabaseWrapper(PostgresDatabaseWrapper):
    connection: Any  # the psycopg connection (the base class comes from untyped django_prometheus)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statements_since_checkout = 0
        self.execute_wrappers.append(self._guarded_execute)
        self._commit_position: int | None = None

    def _commit(self) -> None:
        """COMMIT, and the WAL insert position after it, in one round trip. The position
        is kept until the next statement on this connection (commit_position_take)."""
        self._commit_position = None
        if self.connection is None or self.connection.pgconn.transaction_status != TransactionStatus.INTRANS:
            super()._commit()  # nothing written (psycopg sends nothing), or a failed transaction
            return
        with debug_transaction(self, "COMMIT"), self.wrap_database_errors:
            # prepare=False: a message of two statements cannot be a prepared statement.
            cursor = self.connection.execute(_COMMIT_WITH_POSITION, prepare=False)
            cursor.nextset()
            row = cursor.fetchone()
        mark_alive(self.connection)
        self._commit_position = int(row[0])

    def commit_position_take(self) -> int | None:
        """The WAL insert position read with this connection's last COMMIT, if nothing
        ran on it since (then it is at or past every write it made); once only."""
        position, self._commit_position = self._commit_position, None
        return position

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        primary_outage.before_connect(self.alias, conn_params)
        try:
            connection = self._checked_connection(conn_params)
        except Exception as exc:
            if is_connection_failure(exc):
                primary_outage.primary_failed(self.alias, type(exc).__name__)
            raise
        self.statements_since_checkout = 0
        return connection

    def _checked_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        if self.pool is None:
            return connection  # not pooled: brand new
        if recently_alive(connection):
            return connection  # answered a moment ago and nothing is waiting on its socket
        try:
            check_within_deadline(self.alias, connection)
            return connection
        except Exception as exc:
            with suppress(Exception):
                connection._pool.putconn(connection)  # broken: the pool discards it
            if not is_connection_failure(exc):
                raise
        discard_pool(self.alias)  # its siblings died with it; a fresh pool connects now
        connection = super().get_new_connection(conn_params)
        check_within_deadline(self.alias, connection)
        return connection

    def _guarded_execute(self, execute: Any, sql: str, params: Any, many: bool, context: dict) -> Any:
        self._commit_position = None  # a statement after the commit may write past it
        first = self.statements_since_checkout == 0
        self.statements_since_checkout += 1
        try:
            result = self._run_with_deadline(execute, sql, params, many, context)
        except DatabaseError as exc:
            if not is_connection_failure(exc):
                raise
            if not (first and self._safe_to_rerun(sql, context)):
                primary_outage.primary_failed(self.alias, type(exc.__cause__ or exc).__name__)
                raise
            self._replace_broken_connection(context)
            try:
                result = self._run_with_deadline(execute, sql, params, many, context)
            except DatabaseError as retry_exc:
                if is_connection_failure(retry_exc):
                    primary_outage.primary_failed(self.alias, type(retry_exc.__cause__ or retry_exc).__name__)
                raise
        primary_outage.primary_succeeded(self.alias)
        mark_alive(self.connection)
        return result

    def _run_with_deadline(self, execute: Any, sql: str, params: Any, many: bool, context: dict) -> Any:
        deadline = settings.DB_STATEMENT_TIMEOUT_MS / 1000 + settings.DB_STATEMENT_DEADLINE_MARGIN_SECONDS
        with watchdog.guard(self.connection.pgconn.socket, deadline, f"{self.alias} (statement)"):
            return execute(sql, params, many, context)

    def _safe_to_rerun(self, sql: str, context: dict) -> bool:
        if getattr(context["cursor"].cursor, "name", None):  # a server-side cursor
            return False
        return self.in_atomic_block or statement_reads_only(str(sql))

    def _replace_broken_connection(self, context: dict) -> None:
        """Swap in a fresh connection in place (Django's transaction bookkeeping stays
        valid: nothing ran on the broken one) and a new cursor on it."""
        broken, autocommit = self.connection, self.get_autocommit()
        with self.wrap_database_errors:
            pool = getattr(broken, "_pool", None)
            with suppress(Exception):  # the pool may be closed already
                pool.putconn(broken) if pool is not None else broken.close()  # the pool discards it
            self.connection = self.get_new_connection(self.get_connection_params())
            if self.connection.autocommit != autocommit:
                self.connection.autocommit = autocommit
            self.statements_since_checkout = 1
            self.errors_occurred = False
            context["cursor"].cursor = self.create_cursor()
