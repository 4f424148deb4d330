"""A pooled primary connection skips its check only when it answered a moment ago and
nothing waits on its socket (replicas/pools.py `recently_alive`), against the real
primary: a connection the server terminated is always checked (and found dead)."""

import time

import psycopg
import pytest

from replicas.pools import mark_alive, recently_alive
from tests import conftest
from tests.replica_support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _connect() -> psycopg.Connection:
    return psycopg.Connection.connect(conftest.test_database_url(), autocommit=True)


def test_a_connection_that_just_answered_skips_the_check(settings):
    settings.DB_CHECK_SKIP_SECONDS = 5.0
    with _connect() as connection:
        assert not recently_alive(connection)  # never marked: checked
        connection.execute("SELECT 1")
        mark_alive(connection)
        assert recently_alive(connection)


def test_an_answer_older_than_the_window_means_a_check(settings):
    settings.DB_CHECK_SKIP_SECONDS = 0.05
    with _connect() as connection:
        mark_alive(connection)
        wait_until(lambda: not recently_alive(connection), 5)
        settings.DB_CHECK_SKIP_SECONDS = 0.0  # 0: always check
        mark_alive(connection)
        time.sleep(0.001)  # the window is 0: any time at all is past it
        assert not recently_alive(connection)


def test_a_connection_the_server_terminated_is_checked_even_right_after_an_answer(settings):
    settings.DB_CHECK_SKIP_SECONDS = 60.0
    with _connect() as victim, _connect() as admin:
        pid = victim.info.backend_pid
        mark_alive(victim)
        assert recently_alive(victim)
        # What a restart does to every backend: the server ends the session and says so.
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_until(lambda: not recently_alive(victim), 10)
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")  # the check it now gets would have found it dead
