"""CONTRACT §5 caps across server processes: two uvicorn processes on two ports, one
Redis. The 11th socket of a user gets 4429, the org cap 4430; 50 simultaneous connects
let exactly the cap in; a closed socket frees its slot at once; a SIGKILLed process's
slots are free again once their leases lapse (3 s here, <= 60 s by configuration)."""

import asyncio
import signal
import time

import pytest
from django.core.checks import Error
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from realtime.checks import realtime_settings_check
from tenancy.models import Membership
from tests import conftest
from tests.conftest import REALTIME_TEST_ENV
from tests.live_server import running_servers
from tests.realtime_client import open_socket, refusal, token_of

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

LEASE = float(REALTIME_TEST_ENV["REALTIME_LEASE_SECONDS"])
ORG_CAP = int(REALTIME_TEST_ENV["MAX_CONNECTIONS_PER_ORG"])
USER_CAP = 10


async def _attempt(ws: str, org_id, token: str) -> tuple[str, ClientConnection | tuple[int, str]]:
    """('in', socket) or ('out', (code, reason))."""
    try:
        socket, _ = await open_socket(ws, org_id, token)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the server sent no close frame"
        return "out", (closed.rcvd.code, closed.rcvd.reason)
    return "in", socket


async def _simultaneous(servers, org_id, tokens: list[str]) -> tuple[list, list]:
    results = await asyncio.gather(
        *(_attempt(servers[i % 2].ws_url, org_id, token) for i, token in enumerate(tokens))
    )
    return [r for kind, r in results if kind == "in"], [r for kind, r in results if kind == "out"]


def test_the_11th_socket_of_a_user_is_4429_and_closing_one_frees_its_slot_at_once(realtime_servers, tenant):
    token = token_of(tenant.users["owner"])

    async def scenario():
        held = [
            (await open_socket(realtime_servers[i % 2].ws_url, tenant.org.id, token))[0] for i in range(10)
        ]
        refused = await refusal(realtime_servers[0].ws_url, tenant.org.id, token)
        await asyncio.sleep(LEASE + 1)  # heartbeats renew the leases: still full after a lease
        refused_later = await refusal(realtime_servers[1].ws_url, tenant.org.id, token)
        await held.pop().close()
        replacement, _ = await open_socket(realtime_servers[1].ws_url, tenant.org.id, token)  # at once
        refused_again = await refusal(realtime_servers[0].ws_url, tenant.org.id, token)
        for socket in [*held, replacement]:
            await socket.close()
        return refused, refused_later, refused_again

    refused, refused_later, refused_again = asyncio.run(scenario())
    assert refused == (4429, "User connection limit reached (MAX_CONNECTIONS_PER_USER=10)")
    assert refused_later[0] == refused_again[0] == 4429


def test_50_simultaneous_connects_of_one_user_on_two_processes_let_exactly_10_in(realtime_servers, tenant):
    token = token_of(tenant.users["owner"])

    async def scenario():
        accepted, refused = await _simultaneous(realtime_servers, tenant.org.id, [token] * 50)
        for socket in accepted:
            await socket.close()
        return len(accepted), refused

    accepted, refused = asyncio.run(scenario())
    assert accepted == USER_CAP
    assert {code for code, _ in refused} == {4429} and len(refused) == 50 - USER_CAP


def test_50_simultaneous_connects_to_one_org_on_two_processes_let_exactly_the_org_cap_in(
    realtime_servers, tenant, make_user
):
    users = [make_user() for _ in range(50)]
    Membership.objects.bulk_create(Membership(org=tenant.org, user=user, role="viewer") for user in users)
    tokens = [token_of(user) for user in users]

    async def scenario():
        accepted, refused = await _simultaneous(realtime_servers, tenant.org.id, tokens)
        for socket in accepted:
            await socket.close()
        return len(accepted), refused

    accepted, refused = asyncio.run(scenario())
    assert accepted == ORG_CAP
    assert len(refused) == 50 - ORG_CAP
    assert set(refused) == {
        (4430, f"Organization connection limit reached (MAX_CONNECTIONS_PER_ORG={ORG_CAP})")
    }


def test_one_orgs_cap_does_not_touch_another_org(realtime_servers, tenant, other_tenant, make_user):
    users = [make_user() for _ in range(ORG_CAP)]
    Membership.objects.bulk_create(Membership(org=tenant.org, user=user, role="viewer") for user in users)
    tokens = [token_of(user) for user in users]
    other = token_of(other_tenant.users["owner"])

    async def scenario():
        accepted, refused = await _simultaneous(realtime_servers, tenant.org.id, tokens)
        outcome, other_socket = await _attempt(realtime_servers[0].ws_url, other_tenant.org.id, other)
        for socket in accepted:
            await socket.close()
        if isinstance(other_socket, ClientConnection):
            await other_socket.close()
        return len(accepted), refused, outcome

    accepted, refused, other_outcome = asyncio.run(scenario())
    assert (accepted, refused, other_outcome) == (ORG_CAP, [], "in")


def test_a_sigkilled_process_slots_are_free_again_when_their_leases_lapse(django_db_blocker, tenant):
    token = token_of(tenant.users["owner"])

    def scenario(doomed, survivor) -> float:
        async def run() -> float:
            for _ in range(USER_CAP):
                await open_socket(doomed.ws_url, tenant.org.id, token)  # never closed: the process dies
            doomed.process.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            assert (await refusal(survivor.ws_url, tenant.org.id, token))[0] == 4429  # leases still live
            while time.monotonic() - killed_at < 60:
                outcome, socket = await _attempt(survivor.ws_url, tenant.org.id, token)
                if outcome == "in":
                    freed_after = time.monotonic() - killed_at
                    assert isinstance(socket, ClientConnection)
                    await socket.close()
                    return freed_after
                await asyncio.sleep(0.2)
            raise AssertionError("slots still held 60 s after the process died")

        return asyncio.run(run())

    with (
        django_db_blocker.unblock(),
        running_servers(conftest.test_database_url(), 2, **REALTIME_TEST_ENV) as servers,
    ):
        freed_after = scenario(*servers)
    assert freed_after <= LEASE + 1.0


def test_the_60_second_bound_holds_by_configuration(settings):
    assert settings.REALTIME_LEASE_SECONDS <= 60  # the defaults meet the contract
    assert realtime_settings_check(None) == []
    settings.REALTIME_LEASE_SECONDS = 61
    errors = realtime_settings_check(None)
    assert [error.id for error in errors] == ["realtime.E001"] and isinstance(errors[0], Error)
    settings.REALTIME_LEASE_SECONDS, settings.REALTIME_HEARTBEAT_SECONDS = 30, 20
    assert [error.id for error in realtime_settings_check(None)] == ["realtime.E002"]


def test_the_default_caps_are_the_contracts(settings):
    assert (settings.MAX_CONNECTIONS_PER_USER, settings.MAX_CONNECTIONS_PER_ORG) == (10, 1000)


def test_a_stalled_process_never_pushes_a_user_over_the_cap(django_db_blocker, tenant):
    """Process A holds 10 sockets and freezes (SIGSTOP) past the lease; B hands the
    freed slot to a new socket; when A wakes, its renewals find the cap full again and
    exactly one of its sockets is closed with 4429: never 11 at once."""
    token = token_of(tenant.users["owner"])

    def scenario(stalled, other) -> list:
        async def run() -> list:
            held = [(await open_socket(stalled.ws_url, tenant.org.id, token))[0] for _ in range(USER_CAP)]
            stalled.process.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(LEASE + 0.5)
                newcomer, _ = await open_socket(other.ws_url, tenant.org.id, token)
            finally:
                stalled.process.send_signal(signal.SIGCONT)
            await asyncio.sleep(2.5)  # a heartbeat or two after waking
            codes = [socket.close_code for socket in held]
            for socket in [*held, newcomer]:
                await socket.close()
            return codes

        return asyncio.run(run())

    with (
        django_db_blocker.unblock(),
        running_servers(conftest.test_database_url(), 2, **REALTIME_TEST_ENV) as servers,
    ):
        codes = scenario(*servers)
    assert sorted(codes, key=str) == [4429] + [None] * (USER_CAP - 1)
