"""Database backend for replica aliases (ENGINE "replicas.backend"): the PostgreSQL
backend (django-prometheus' instrumented one, like the primary's, so queries are
counted per alias in django_db_execute_total) whose cursors fail over (replicas/failover.py) when used by the
router inside a request, and which refuses to be migrated."""

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django_prometheus.db.backends.postgresql.base import DatabaseWrapper as PostgresDatabaseWrapper

from replicas.context import current_routing
from replicas.failover import FailoverCursor, cursor_elsewhere, failure_kind


class DatabaseWrapper(PostgresDatabaseWrapper):
    def _cursor(self, name: str | None = None) -> Any:
        if current_routing() is None:  # direct use (tests, tools): plain behaviour
            return super()._cursor(name)
        try:
            cursor = super()._cursor(name)
        except DatabaseError as exc:
            kind = failure_kind(exc)
            if kind is None:
                raise
            return cursor_elsewhere(self.alias, kind, exc, chunked=name is not None)
        return FailoverCursor(cursor, self.alias, chunked=name is not None)

    def probe_cursor(self) -> Any:
        """A plain cursor (no failover), for the router's own replay-position probe."""
        return super()._cursor()

    def prepare_database(self) -> None:
        raise ImproperlyConfigured(f"'{self.alias}' is a read replica: migrate its primary instead")
