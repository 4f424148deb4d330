"""A primary's COMMIT reads the WAL insert position in its own round trip
(replicas/primary `commit_position_take`), against the real primary: the position covers
the transaction's writes, it is dropped by any later statement, and a transaction that
ran nothing commits the plain way."""

from typing import cast

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from psycopg.pq import TransactionStatus

from replicas.primary.base import DatabaseWrapper as PrimaryDatabaseWrapper
from tenancy.models import Organization

pytestmark = pytest.mark.django_db(transaction=True)


def _primary() -> PrimaryDatabaseWrapper:
    """The default alias's wrapper, as its backend (replicas.primary) types it."""
    return cast(PrimaryDatabaseWrapper, connection)


def _wal_insert_position() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


def test_the_commit_brings_a_position_past_its_writes_once():
    before = _wal_insert_position()
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        Organization.objects.create(name="Position")
    position = _primary().commit_position_take()
    assert position is not None and position > before
    assert _primary().commit_position_take() is None  # once only
    assert [q["sql"] for q in queries.captured_queries][-1] == "COMMIT"
    assert not any("pg_current_wal_insert_lsn" in q["sql"] for q in queries.captured_queries)
    assert _wal_insert_position() >= position  # read after the commit record, not before


def test_a_statement_after_the_commit_drops_the_position():
    with transaction.atomic():
        Organization.objects.create(name="Later")
    Organization.objects.create(name="Autocommitted after")  # may write past the position
    assert _primary().commit_position_take() is None


def test_a_transaction_that_ran_nothing_commits_the_plain_way_and_brings_no_position():
    """psycopg sends nothing for it (no BEGIN was sent); ours must not send a COMMIT with
    a position read either, which would first open a transaction."""
    connection.ensure_connection()
    with transaction.atomic():
        pass
    assert _primary().commit_position_take() is None
    assert connection.connection.pgconn.transaction_status == TransactionStatus.IDLE


def test_a_failed_commit_raises_and_brings_no_position():
    """A deferred constraint fails at COMMIT: the error reaches the caller as Django's,
    nothing is committed and no position is kept."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE deferred_check (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO deferred_check VALUES (1), (1)")
    assert _primary().commit_position_take() is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM deferred_check")
        assert cursor.fetchone()[0] == 0
