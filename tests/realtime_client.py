"""A small websocket client for realtime tests (the `websockets` package, on the wire)."""

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin


def org_url(ws_base: str, org_id: Any, **params: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return f"{ws_base}/v2/realtime/orgs/{org_id}/" + (f"?{query}" if query else "")


async def open_socket(
    ws_base: str,
    org_id: Any,
    token: str | None,
    *,
    via: str = "header",
    origin: str | None = None,
    **params: str,
) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect and wait for the `ready` message; raises ConnectionClosed if refused.
    `origin`: the Origin header a browser page would send (none, as a mobile app)."""
    headers: dict[str, str] = {}
    if token is not None and via == "header":
        headers["Authorization"] = f"Token {token}"
    elif token is not None:
        params["token"] = token
    socket = await connect(
        org_url(ws_base, org_id, **params),
        additional_headers=headers,
        open_timeout=10,
        origin=None if origin is None else Origin(origin),
    )
    messages: list[dict[str, Any]] = []
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


async def next_change(socket: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    """The next change event, checking that its `sync.poke` follows it (CONTRACT §10)."""
    event = await next_event(socket, timeout)
    poke = await next_event(socket, timeout)
    expected = {"type": "sync.poke", "org_id": event["org_id"], "version": event["version"]}
    assert poke == expected, (event, poke)
    return event


async def assert_silent(socket: ClientConnection, within: float = 0.5) -> None:
    try:
        message = await asyncio.wait_for(socket.recv(), within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {message[:200]!r}")


def token_of(user: Any) -> str:
    from tests.tokens import token_for

    return token_for(user)


class RawSocketClient:
    """A websocket client on a bare socket, for clients that stop reading: the
    `websockets` library keeps reading in the background, a real stalled phone does not.
    Server frames are unmasked; only what these tests need is parsed."""

    def __init__(self, ws_base: str, path: str, *, receive_buffer: int = 4096) -> None:
        host, port = ws_base.removeprefix("ws://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed without a close frame")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def next_frame(self) -> tuple[int, bytes]:
        first, second = self._read_exactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exactly(8))[0]
        return first & 0x0F, self._read_exactly(length)

    def read_until_close(self) -> tuple[int, str, int]:
        """(close code, reason, data frames read before it)."""
        frames = 0
        while True:
            opcode, payload = self.next_frame()
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode(), frames
            frames += opcode in (0x1, 0x2)

    def close(self) -> None:
        self.sock.close()
