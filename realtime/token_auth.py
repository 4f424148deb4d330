"""Who is connecting: an API token from `Authorization: Token <t>` or `?token=<t>`.

Browsers cannot set headers on a WebSocket, hence the query parameter; tokens in URLs
reach access logs, so bin/serve runs uvicorn without an access log for this reason.
"""

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from knox.models import AuthToken

from accounts.selectors import token_find

MAX_TOKEN_CHARS = 256


def query_params(scope: Mapping[str, Any]) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {name: values[0] for name, values in parse_qs(raw).items()}


def token_from_scope(scope: Mapping[str, Any]) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "token" and token.strip():
                return token.strip()[:MAX_TOKEN_CHARS]
            return None
    token = query_params(scope).get("token", "").strip()
    return token[:MAX_TOKEN_CHARS] or None


@database_sync_to_async
def token_for(token: str) -> AuthToken | None:
    """The live token row (its user, digest and expiry), or None. Outside a request
    scope, so it reads the primary: a revoked token is refused at once."""
    return token_find(token=token)
