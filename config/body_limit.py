"""Refuse request bodies over MAX_REQUEST_BODY_BYTES before Django reads them.

Django trusts Content-Length and cannot read chunked bodies under WSGI at all (it sees
an empty body). These wrappers sit in front of Django:

- a declared Content-Length over the limit gets 413 at once; nothing is read;
- a chunked body is streamed into a spooled temporary file (memory up to 1 MiB, then
  disk) and refused with 413 the moment it passes the limit, so no body, however large,
  is ever held whole in memory; a body that fits is handed to Django with its length.

A body longer than its Content-Length is never read past the declared length (the
server's reader stops there), so the extra bytes cannot reach the application.
"""

import json
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

CHUNK_BYTES = 64 * 1024
SPOOL_MEMORY_BYTES = 1024 * 1024

_TOO_LARGE = json.dumps({"detail": "Request body too large."}).encode()
_BAD_LENGTH = json.dumps({"detail": "Invalid Content-Length header."}).encode()


def _limit() -> int:
    from django.conf import settings

    return settings.MAX_REQUEST_BODY_BYTES


class WSGIBodyLimit:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        limit = _limit()
        declared = environ.get("CONTENT_LENGTH") or ""
        if declared:
            try:
                length = int(declared)
            except ValueError:
                return self._reply(start_response, "400 Bad Request", _BAD_LENGTH)
            if length < 0:
                return self._reply(start_response, "400 Bad Request", _BAD_LENGTH)
            if length > limit:
                return self._reply(start_response, "413 Request Entity Too Large", _TOO_LARGE)
        elif environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            spooled = self._spool(environ["wsgi.input"], limit)
            if spooled is None:
                return self._reply(start_response, "413 Request Entity Too Large", _TOO_LARGE)
            body, size = spooled
            environ["wsgi.input"] = body
            environ["CONTENT_LENGTH"] = str(size)
        return self.app(environ, start_response)

    @staticmethod
    def _spool(stream: Any, limit: int) -> tuple[Any, int] | None:
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 (handed on)
        size = 0
        while chunk := stream.read(CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                body.close()
                return None
            body.write(chunk)
        body.seek(0)
        return body, size

    @staticmethod
    def _reply(start_response: Callable[..., Any], status: str, body: bytes) -> list[bytes]:
        # Connection: close, so the server does not have to drain an unread body.
        start_response(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ],
        )
        return [body]


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ASGIBodyLimit:
    """The same limit for HTTP served over ASGI; websockets pass through untouched."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = _limit()
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                await self._reply(send, 400, _BAD_LENGTH)
                return
            if too_large:
                await self._reply(send, 413, _TOO_LARGE)
                return
        messages: list[dict[str, Any]] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await self._reply(send, 413, _TOO_LARGE)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict[str, Any]:
            return messages.pop(0) if messages else await receive()

        if declared is None:
            # A chunked body: Django reads only Content-Length bytes, so give it one.
            scope = dict(scope)
            scope["headers"] = [
                (name, value) for name, value in scope.get("headers") or [] if name != b"transfer-encoding"
            ] + [(b"content-length", str(size).encode())]
        await self.app(scope, replay, send)

    @staticmethod
    async def _reply(send: Send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
