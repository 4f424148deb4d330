"""Requests straight through a Django WSGI handler, no server and no socket: what the
in-process benchmarks send. Imports no settings, so either Django project can use it."""

import io
import sys
from collections.abc import Callable
from typing import Any


def wsgi_environ(
    method: str, path: str, token: str | None = None, body: bytes = b"", key: str | None = None
) -> dict:
    path, _, query = path.partition("?")
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000", "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
    }  # fmt: skip
    if token:
        environ["HTTP_AUTHORIZATION"] = f"Token {token}"
    if key:
        environ["HTTP_IDEMPOTENCY_KEY"] = key
    return environ


def wsgi_call(handler: Callable[..., Any], environ: dict) -> bool:
    """Send one request; True for a 2xx answer (its body read and dropped)."""
    status: list[str] = []

    def start_response(
        line: str, headers: list[tuple[str, str]], exc_info: object = None
    ) -> Callable[[bytes], object]:
        status.append(line)
        return _discard

    b"".join(handler(environ, start_response))
    return status[0][:1] == "2"


def _discard(data: bytes) -> None:
    """The `write` callable start_response returns (Django never calls it)."""
