"""Only browser pages of our own origins may open a socket (CONTRACT §5).

A browser always sends `Origin` on a websocket upgrade and attaches no credentials
we could check for CSRF, so a page on any other site could otherwise open a socket
with a token it got hold of (`?token=`) or make a user's browser do so. Upgrades whose
Origin is neither this service's own (the page came from the host the socket is
opened on: same-origin, as Django's CSRF check reasons) nor in CORS_ALLOWED_ORIGINS are
accepted and closed at once with 4403 (a close before accept would reach the client as
a bare HTTP 403, without a code). Clients that are not browsers (mobile apps, servers)
send no Origin and pass; a browser cannot forge either header.
"""

from typing import Any

from django.conf import settings

ORIGIN_REFUSED = (4403, "Origin not allowed")


def origin_allowed(origin: str | None, host: str | None = None) -> bool:
    if origin is None:
        return True
    origin = origin.rstrip("/").lower()
    if host and origin.partition("://")[2] == host.lower():
        return True  # same origin: a page this service served
    return origin in {allowed.rstrip("/").lower() for allowed in settings.CORS_ALLOWED_ORIGINS}


def _header(scope: dict[str, Any], wanted: bytes) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == wanted:
            return value.decode("latin-1")
    return None


class WebsocketOriginCheck:
    """ASGI wrapper in front of the websocket router."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or origin_allowed(_header(scope, b"origin"), _header(scope, b"host")):
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        code, reason = ORIGIN_REFUSED
        await send({"type": "websocket.close", "code": code, "reason": reason})
