"""The primary restarting or hanging under load (CONTRACT §7), against the local
stack's real primary and replicas, through real gunicorn and uvicorn processes:
writes answer only 201 or 503 with Retry-After while it is down and all succeed once
it is back; websockets are accepted or closed cleanly with 1013; health answers 503
within 3 s while it hangs; replicas stream from the restarted primary by themselves."""

import asyncio
import threading
import time
from contextlib import ExitStack, suppress
from typing import Any

import httpx
import pytest
from django.db import connections
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests import conftest, replica_support
from tests.live_server import server_process
from tests.realtime_client import open_socket, token_of

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SERVER_ENV = {"METRICS_TOKEN": "primary-faults-token", "DB_POOL_TIMEOUT_SECONDS": "5"}


class Writes(threading.Thread):
    """POSTs expenses one after another, recording (status, Retry-After) of each."""

    def __init__(self, base_url: str, tenant: Any, token: str) -> None:
        super().__init__(daemon=True)
        self.url = base_url + tenant.url("/expenses")
        self.payload = tenant.entry_payload()
        self.headers = {"Authorization": f"Token {token}"}
        self.results: list[tuple[int, str | None]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                response = client.post(self.url, json=self.payload, headers=self.headers)
                self.results.append((response.status_code, response.headers.get("Retry-After")))
                time.sleep(0.02)

    def ok_in_a_row_at_end(self) -> int:
        count = 0
        for status, _ in reversed(list(self.results)):
            if status != 201:
                break
            count += 1
        return count


class Sockets(threading.Thread):
    """Opens websockets one after another: 'ready' or the close code it was refused with."""

    def __init__(self, ws_url: str, org_id: Any, token: str) -> None:
        super().__init__(daemon=True)
        self.ws_url, self.org_id, self.token = ws_url, org_id, token
        self.outcomes: list[str | int] = []
        self.stop = threading.Event()

    async def _once(self) -> str | int:
        try:
            socket, _ = await open_socket(self.ws_url, self.org_id, self.token)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else "no close frame"
        except (InvalidStatus, OSError, TimeoutError) as error:
            return type(error).__name__
        await socket.close()
        return "ready"

    def run(self) -> None:
        while not self.stop.is_set():
            self.outcomes.append(asyncio.run(self._once()))
            time.sleep(0.05)

    def ready_in_a_row_at_end(self) -> int:
        count = 0
        for outcome in reversed(list(self.outcomes)):
            if outcome != "ready":
                break
            count += 1
        return count


def _streaming_replicas() -> int:
    row = replica_support.sql("default", "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
    return row[0] if row else 0


def test_a_primary_restart_under_writes_answers_only_201_or_503_then_every_write_succeeds(
    tenant, django_db_blocker
):
    token = token_of(tenant.users["owner"])
    with django_db_blocker.unblock(), ExitStack() as stack:
        rest = stack.enter_context(server_process(conftest.test_database_url(), **SERVER_ENV))
        realtime = stack.enter_context(
            server_process(conftest.test_database_url(), "asgi", **(conftest.REALTIME_TEST_ENV | SERVER_ENV))
        )
        writes, sockets = Writes(rest.url, tenant, token), Sockets(realtime.ws_url, tenant.org.id, token)
        writes.start()
        sockets.start()
        try:
            replica_support.wait_until(lambda: writes.ok_in_a_row_at_end() >= 5, 30)
            replica_support.wait_until(lambda: sockets.ready_in_a_row_at_end() >= 2, 30)
            before = len(writes.results), len(sockets.outcomes)
            replica_support.stack("pg-restart")  # pg_ctl restart -m fast, waits until it is up
            restarted_at = len(writes.results), len(sockets.outcomes)
            replica_support.wait_until(lambda: len(writes.results) > restarted_at[0] + 40, 90)
            replica_support.wait_until(lambda: writes.ok_in_a_row_at_end() >= 40, 90)
            replica_support.wait_until(lambda: sockets.ready_in_a_row_at_end() >= 5, 60)
        finally:
            writes.stop.set()
            sockets.stop.set()
            writes.join(60)
            sockets.join(60)
            connections.close_all()  # this process's own connection died with the restart
    statuses = [status for status, _ in writes.results]
    assert set(statuses) <= {201, 503}, sorted(set(statuses))
    assert all(retry_after for status, retry_after in writes.results if status == 503)
    # After the restart, once writes succeed again, they all do.
    after = statuses[restarted_at[0] :]
    first_ok = after.index(201)
    assert set(after[first_ok:]) == {201}, after
    assert len(after[first_ok:]) >= 40
    # Websockets opened meanwhile were accepted or closed cleanly as "try again later".
    assert set(sockets.outcomes) <= {"ready", 1013}, sockets.outcomes
    assert sockets.outcomes[before[1] :].count("ready") >= 5
    print(
        f"primary restart: {len(statuses)} writes, {statuses.count(503)} answered 503; "
        f"{len(sockets.outcomes)} sockets, {sockets.outcomes.count(1013)} closed 1013"
    )
    # The replicas stream from the restarted primary again, with nobody touching them.
    replica_support.wait_until(lambda: _streaming_replicas() == len(replica_support.REPLICAS), 30)


def _health(base_url: str) -> tuple[int, float]:
    started = time.monotonic()
    response = httpx.get(base_url + "/v1/system/health", timeout=30)
    return response.status_code, time.monotonic() - started


def test_a_hung_primary_makes_health_503_within_3_seconds_and_everything_recovers(tenant, django_db_blocker):
    token = token_of(tenant.users["owner"])
    headers = {"Authorization": f"Token {token}"}
    with django_db_blocker.unblock(), ExitStack() as stack:
        rest = stack.enter_context(server_process(conftest.test_database_url(), **SERVER_ENV))
        realtime = stack.enter_context(
            server_process(conftest.test_database_url(), "asgi", **(conftest.REALTIME_TEST_ENV | SERVER_ENV))
        )
        assert _health(rest.url)[0] == 200
        with replica_support.server_hung("primary"):
            answers = [_health(rest.url) for _ in range(3)]
            started = time.monotonic()
            refused = asyncio.run(_refusal_code(realtime.ws_url, tenant.org.id, token))
            socket_seconds = time.monotonic() - started
            write = httpx.post(
                rest.url + tenant.url("/expenses"), json=tenant.entry_payload(), headers=headers, timeout=60
            )
        assert [status for status, _ in answers] == [503, 503, 503], answers
        assert max(seconds for _, seconds in answers) < 3.0, answers  # the contract's bound
        assert refused == 1013 and socket_seconds < 20, (refused, socket_seconds)
        assert write.status_code == 503 and write.headers["Retry-After"], write.text
        # Thawed: health, writes and sockets work again without restarting anything.
        replica_support.wait_until(lambda: _health(rest.url)[0] == 200, 30)
        replica_support.wait_until(
            lambda: (
                httpx.post(
                    rest.url + tenant.url("/expenses"),
                    json=tenant.entry_payload(),
                    headers=headers,
                    timeout=30,
                ).status_code
                == 201
            ),
            30,
        )
        socket, _ = asyncio.run(open_socket(realtime.ws_url, tenant.org.id, token))
        with suppress(Exception):
            asyncio.run(socket.close())
    print(f"hung primary: health {answers}; websocket closed {refused} after {socket_seconds:.1f}s")


async def _refusal_code(ws_url: str, org_id: Any, token: str) -> int | str:
    try:
        socket, _ = await open_socket(ws_url, org_id, token)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else "no close frame"
    await socket.close()
    return "accepted"
