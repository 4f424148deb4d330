"""A small websocket client for realtime tests (the `websockets` package, on the wire)."""

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


def org_url(ws_base: str, org_id: Any, **params: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return f"{ws_base}/v2/realtime/orgs/{org_id}/" + (f"?{query}" if query else "")


async def open_socket(
    ws_base: str, org_id: Any, token: str | None, *, via: str = "header", **params: str
) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect and wait for the `ready` message; raises ConnectionClosed if refused."""
    headers = {}
    if token is not None and via == "header":
        headers["Authorization"] = f"Token {token}"
    elif token is not None:
        params["token"] = token
    socket = await connect(org_url(ws_base, org_id, **params), additional_headers=headers, open_timeout=10)
    messages = []
    while True:
        message = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if message["type"] == "ready":
            return socket, message | {"before_ready": messages}
        messages.append(message)


async def refusal(
    ws_base: str, org_id: Any, token: str | None, *, via: str = "header", **params: str
) -> tuple[int, str]:
    """The close code and reason a refused connection gets; fails if it is accepted."""
    try:
        socket, _ = await open_socket(ws_base, org_id, token, via=via, **params)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the server sent no close frame"
        return closed.rcvd.code, closed.rcvd.reason
    await socket.close()
    raise AssertionError("the connection was accepted")


async def next_event(socket: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(socket.recv(), timeout))


async def assert_silent(socket: ClientConnection, within: float = 0.5) -> None:
    try:
        message = await asyncio.wait_for(socket.recv(), within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {message[:200]}")


def token_of(user: Any) -> str:
    from rest_framework.authtoken.models import Token

    token, _ = Token.objects.get_or_create(user=user)
    return token.key
