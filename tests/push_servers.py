"""Stand-ins for the push services on loopback, for tests and the push benchmark.

Each server records every request (method, path, headers, body, HTTP version, time
received) and answers as the real service would: by default its success status, or
whatever a test scripts (410, 429 with Retry-After, 500s, a held response). The Web
Push and FCM stand-ins speak HTTP/1.1 (http.server); the APNs one speaks HTTP/2 only
(hypercorn, h2 with prior knowledge on a plain loopback socket).
"""

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from tests.live_server import free_port


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    http_version: str
    received_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    hold: threading.Event | None = None  # answer only once this is set


Responder = Callable[[Recorded], Reply | None]


class _Recorder:
    def __init__(self, default_status: int) -> None:
        self.default_status = default_status
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.scripts: list[tuple[Callable[[Recorded], bool], list[Reply]]] = []
        self.responders: list[Responder] = []

    def script(self, matches: Callable[[Recorded], bool], replies: list[Reply]) -> None:
        """The next requests that match get these replies in order, then the default."""
        with self.lock:
            self.scripts.append((matches, list(replies)))

    def reply_for(self, request: Recorded) -> Reply:
        with self.lock:
            self.requests.append(request)
            for matches, replies in self.scripts:
                if replies and matches(request):
                    return replies.pop(0)
        for responder in self.responders:
            reply = responder(request)
            if reply is not None:
                return reply
        return Reply(self.default_status)

    def received(self, predicate: Callable[[Recorded], bool] = lambda r: True) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if predicate(r)]


class Http1PushServer(_Recorder):
    """HTTP/1.1 on 127.0.0.1 (Web Push services, FCM and Google's OAuth token endpoint)."""

    def __init__(self, default_status: int = 201) -> None:
        super().__init__(default_status)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Recorded(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                    http_version=self.request_version,
                )
                reply = recorder.reply_for(request)
                if reply.hold is not None:
                    reply.hold.wait(60)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Http1PushServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Http2PushServer(_Recorder):
    """HTTP/2 only, like APNs (an HTTP/1.1 request is refused by the test itself: every
    recorded request carries its version)."""

    def __init__(self, default_status: int = 200) -> None:
        super().__init__(default_status)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = Recorded(
            method=scope["method"],
            path=scope["path"],
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body=body,
            http_version=scope["http_version"],
        )
        reply = self.reply_for(request)
        if reply.hold is not None:
            await asyncio.get_running_loop().run_in_executor(None, reply.hold.wait, 60)
        headers = [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            config = Config()
            config.bind = [f"127.0.0.1:{self.port}"]
            config.accesslog = config.errorlog = None
            self._ready.set()
            await serve(self._app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        asyncio.run(main())

    def __enter__(self) -> "Http2PushServer":
        self.thread.start()
        self._ready.wait(10)
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("HTTP/2 push server did not start")

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


def oauth_token_responder(path: str = "/token") -> Responder:
    """Google's OAuth 2.0 token endpoint: any JWT-bearer grant gets a fresh token."""
    counter = iter(range(1, 1_000_000))

    def respond(request: Recorded) -> Reply | None:
        if request.path != path:
            return None
        body = json.dumps(
            {"access_token": f"ya29.local-{next(counter)}", "expires_in": 3600, "token_type": "Bearer"}
        )
        return Reply(200, {"Content-Type": "application/json"}, body.encode())

    return respond
