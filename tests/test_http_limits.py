"""CONTRACT §7 on the wire, through the real server processes: body limit, CORS, gzip."""

import gzip
import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.live_server import running_server

LIMIT = 32 * 1024 * 1024
MiB = 1024 * 1024


@pytest.fixture(params=["wsgi", "asgi"])
def server(request, live_wsgi, live_asgi) -> str:
    return live_wsgi if request.param == "wsgi" else live_asgi


def _raw_request(base_url: str, head: bytes, body_chunks: Iterator[bytes]) -> bytes:
    """Send a request by hand and return the response bytes (the server must close).

    The response is read while the body is still being sent, as a real client does:
    a server that refuses a body answers early and closes, and bytes still in flight
    then make the kernel reset the connection, dropping anything not yet read.
    """
    parts = urlsplit(base_url)
    received: list[bytes] = []
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:

        def read() -> None:
            try:
                while data := sock.recv(65536):
                    received.append(data)
            except OSError:
                pass

        reader = threading.Thread(target=read)
        reader.start()
        try:
            sock.sendall(head)
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed before we finished: what we want
        reader.join(timeout=30)
    return b"".join(received)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_a_declared_length_over_the_limit_is_413_without_reading_the_body(server):
    head = (
        b"POST /v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {LIMIT + 1}\r\n\r\n".encode()
    )
    response = _raw_request(server, head, iter([b"{"]))  # one byte of the 32 MiB promised
    assert _status(response) == 413
    assert json.loads(response.split(b"\r\n\r\n", 1)[1]) == {"detail": "Request body too large."}


def test_a_33_mib_chunked_upload_is_413(server):
    head = (
        b"POST /v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * MiB

    def chunks() -> Iterator[bytes]:
        for _ in range(33):
            yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        yield b"0\r\n\r\n"

    response = _raw_request(server, head, chunks())
    assert _status(response) == 413


def test_a_small_chunked_body_is_read_normally(server):
    body = json.dumps({"username": "nobody", "password": "x"}).encode()
    head = (
        b"POST /v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    response = _raw_request(server, head, iter([f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"]))
    # Bad credentials, so 400 — but the body was read: the error names the credentials.
    assert _status(response) == 400
    assert b"Unable to log in" in response


def test_a_body_longer_than_its_content_length_is_cut_at_the_declared_length(server):
    body = b'{"username": "a", "password": "b"}' + b"GARBAGE" * 1000
    head = (
        b"POST /v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 34\r\nConnection: close\r\n\r\n"
    )
    response = _raw_request(server, head, iter([body]))
    # Only the 34 declared bytes (a valid JSON object) reached the app: a clean 400 for
    # bad credentials, not a JSON parse error about the extra bytes.
    assert _status(response) == 400
    assert b"Unable to log in" in response


def test_cors_allows_only_the_configured_origins(live_wsgi):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(live_wsgi + "/v1/orgs", headers={"Origin": "http://localhost:3000", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "authorization" in allowed.headers["access-control-allow-headers"]

    denied = httpx.options(live_wsgi + "/v1/orgs", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in denied.headers
    simple = httpx.get(live_wsgi + "/v1/system/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_origins_come_from_the_setting(live_wsgi, django_db_blocker):
    from tests.conftest import test_database_url

    with (
        django_db_blocker.unblock(),
        running_server(test_database_url(), CORS_ALLOWED_ORIGINS="https://app.hotel.example") as url,
    ):
        ok = httpx.get(url + "/v1/system/health", headers={"Origin": "https://app.hotel.example"})
        assert ok.headers["access-control-allow-origin"] == "https://app.hotel.example"
        old_default = httpx.get(url + "/v1/system/health", headers={"Origin": "http://localhost:3000"})
        assert "access-control-allow-origin" not in old_default.headers


def test_responses_of_1_kib_or_more_are_gzipped_smaller_ones_not(live_wsgi):
    big = httpx.get(live_wsgi + "/v1/schema", headers={"Accept-Encoding": "gzip"})
    assert big.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in big.headers["vary"]
    raw = httpx.get(live_wsgi + "/v1/schema", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert len(raw.content) >= 1024
    assert json.loads(big.content) == json.loads(raw.content)  # httpx decoded the gzip

    small = httpx.get(live_wsgi + "/v1/system/health", headers={"Accept-Encoding": "gzip"})
    assert len(small.content) < 1024
    assert "content-encoding" not in small.headers


def test_gzip_bytes_on_the_wire_are_real_gzip(live_wsgi):
    with httpx.stream("GET", live_wsgi + "/v1/schema", headers={"Accept-Encoding": "gzip"}) as response:
        wire = b"".join(response.iter_raw())
    assert wire[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(wire))["openapi"].startswith("3.")


def test_errors_are_json_never_html(live_wsgi):
    for path in ("/nope", "/v1/orgs/not-a-uuid/expenses", "/admin/../../etc/passwd"):
        response = httpx.get(live_wsgi + path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"detail": "Not found."}
    assert "Traceback" not in httpx.post(live_wsgi + "/v1/auth/token", content=b"{bad").text
