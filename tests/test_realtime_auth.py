"""CONTRACT §5 refusals on the wire: 4401 without or with a bad token, 4404 for a
non-member, by header or ?token=; what a client sees is a completed handshake, then
the close frame with the code (ASGI cannot send a close code before accept)."""

import asyncio
import uuid

import pytest
from websockets.asyncio.client import connect

from realtime.event_ids import event_id_key
from tests.realtime_client import open_socket, org_url, refusal, token_of

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def ws(realtime_servers) -> str:
    return realtime_servers[0].ws_url


def test_no_token_is_closed_with_4401(ws, tenant):
    assert asyncio.run(refusal(ws, tenant.org.id, None)) == (4401, "Missing or invalid token")


@pytest.mark.parametrize("via", ["header", "query"])
def test_a_bad_token_is_closed_with_4401(ws, tenant, via):
    code, _ = asyncio.run(refusal(ws, tenant.org.id, "not-a-real-token", via=via))
    assert code == 4401


def test_a_malformed_authorization_header_is_4401(ws, tenant):
    async def scenario():
        url = org_url(ws, tenant.org.id)
        async with connect(url, additional_headers={"Authorization": "Bearer x"}) as socket:
            await socket.wait_closed()
            return socket.close_code

    assert asyncio.run(scenario()) == 4401


def test_an_inactive_users_token_is_4401(ws, tenant):
    owner = tenant.users["owner"]
    token = token_of(owner)
    owner.is_active = False
    owner.save()
    code, _ = asyncio.run(refusal(ws, tenant.org.id, token))
    assert code == 4401


@pytest.mark.parametrize("via", ["header", "query"])
def test_a_non_member_is_closed_with_4404(ws, tenant, other_tenant, via):
    stranger = token_of(other_tenant.users["owner"])
    assert asyncio.run(refusal(ws, tenant.org.id, stranger, via=via)) == (4404, "Not found")


def test_an_org_that_does_not_exist_is_4404_like_a_foreign_one(ws, tenant):
    code, _ = asyncio.run(refusal(ws, uuid.uuid4(), token_of(tenant.users["owner"])))
    assert code == 4404


@pytest.mark.parametrize("via", ["header", "query"])
@pytest.mark.parametrize("role", ["owner", "manager", "viewer"])
def test_every_member_connects_by_header_or_query(ws, tenant, via, role):
    token = token_of(tenant.users[role])

    async def scenario():
        socket, ready = await open_socket(ws, tenant.org.id, token, via=via)
        await socket.close()
        return ready

    ready = asyncio.run(scenario())
    assert ready["type"] == "ready"
    event_id_key(ready["last_event_id"])  # a resumable position even before any event


def test_a_header_token_wins_over_the_query(ws, tenant, other_tenant):
    member, stranger = token_of(tenant.users["owner"]), token_of(other_tenant.users["owner"])

    async def scenario():
        url = org_url(ws, tenant.org.id, token=member)
        async with connect(url, additional_headers={"Authorization": f"Token {stranger}"}) as socket:
            await socket.wait_closed()
            return socket.close_code

    assert asyncio.run(scenario()) == 4404


def test_a_malformed_last_event_id_is_closed_with_4400(ws, tenant):
    code, reason = asyncio.run(
        refusal(ws, tenant.org.id, token_of(tenant.users["owner"]), last_event_id="abc")
    )
    assert code == 4400
    assert "last_event_id" in reason


@pytest.mark.parametrize("path", ["/v2/realtime/orgs/not-a-uuid/", "/v2/realtime/elsewhere", "/"])
def test_an_unknown_websocket_path_is_4404_not_a_server_error(ws, path):
    async def scenario():
        async with connect(ws + path) as socket:
            await socket.wait_closed()
            return socket.close_code

    assert asyncio.run(scenario()) == 4404
