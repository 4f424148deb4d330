"""The metrics sampler's thread against the real primary: a connection the primary
dropped under it (a restart, a failover, a terminated backend) costs one sample, not
every sample for the rest of the process's life (monitoring/sampler.py)."""

import threading

import pytest
from django.db import connections

from changelog.metrics import changelog_outbox_depth
from monitoring.sampler import sample_and_release
from tests.cluster_support import fetch_all

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_connection_dropped_under_the_sampler_costs_one_sample(caplog):
    connected, dropped = threading.Event(), threading.Event()
    backend_pid: list[int] = []
    depths: list[float] = []
    errors: list[BaseException] = []

    def sampler_thread() -> None:  # the sampler's connections are its own thread's
        try:
            with connections["default"].cursor() as cursor:  # as a sampler that connected before
                cursor.execute("SELECT pg_backend_pid()")
                backend_pid.append(cursor.fetchone()[0])
            connected.set()
            assert dropped.wait(30)
            sample_and_release()  # fails on the dropped connection
            changelog_outbox_depth.set(-1)
            sample_and_release()  # connects afresh
            depths.append(changelog_outbox_depth._value.get())
        except BaseException as error:  # handed to the test's thread
            errors.append(error)
            connected.set()

    thread = threading.Thread(target=sampler_thread)
    thread.start()
    assert connected.wait(30) and not errors, errors
    assert fetch_all("default", "SELECT pg_terminate_backend(%s)", (backend_pid[0],)) == [(True,)]
    dropped.set()
    thread.join(30)
    assert not thread.is_alive() and not errors, errors

    assert depths == [0]  # read from the outbox (empty), not the -1 left before
    failures = [r for r in caplog.records if r.getMessage() == "metrics sampler: could not read the outbox"]
    assert len(failures) == 1
