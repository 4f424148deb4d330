"""Varnish with vmod_xkey (deploy/varnish/default.vcl): `PURGE /` with the tags in an
`xkey-purge` (hard) or `xkey-softpurge` header, to every node in CDN_VARNISH_URLS.
The VCL accepts purges only from its `purgers` ACL.

Every keyed write purges on the request thread before its response, so the request is
sent over the standard library's HTTP/1.1 client on a keep-alive connection per thread
and node, not through httpx: httpx's per-request machinery (request and response
models, header normalisation, transports) cost several times the purge's own work in
the profile of a keyed create (docs/performance.md). A reused connection that the node
closed meanwhile (its idle timeout) fails before any answer: the purge is sent once more
on a fresh connection (PURGE is idempotent). Any other failure raises httpx's
TransportError, which the base class turns into PurgeFailed (queued, retried). The
answer stays the standard library's (status, parsed headers, body) rather than being
copied into an httpx response (a sixth of the purge's own CPU, docs/performance.md)."""

import http.client
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from edgecache.backends.base import PurgeBackend, timeout

_local = threading.local()
# A reused connection the node closed while idle fails with one of these, before any answer.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def _connection(base_url: str, *, fresh: bool) -> http.client.HTTPConnection:
    """This thread's keep-alive connection to the node (a new one when `fresh`)."""
    connections: dict[str, http.client.HTTPConnection] = _local.__dict__.setdefault("connections", {})
    existing = connections.pop(base_url, None)
    if existing is not None and not fresh:
        connections[base_url] = existing
        return existing
    if existing is not None:
        existing.close()
    parts = urlsplit(base_url)
    limits = timeout()
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=limits.connect)
    connections[base_url] = connection
    return connection


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    """One Varnish node's answer to a PURGE (a PurgeAnswer)."""

    status_code: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _purge_node(base_url: str, header: str, tags: str) -> NodeAnswer:
    path = (urlsplit(base_url).path.rstrip("/") or "") + "/"
    for attempt in range(2):
        connection = _connection(base_url, fresh=attempt > 0)
        reused = connection.sock is not None
        try:
            if connection.sock is None:
                connection.connect()  # within the connect timeout
            connection.sock.settimeout(timeout().read)
            connection.request("PURGE", path, headers={header: tags})
            answer = connection.getresponse()
            body = answer.read()
        except _STALE as exc:
            connection.close()
            if reused and attempt == 0:
                continue
            raise httpx.TransportError(f"{base_url}: {exc!r}") from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise httpx.TransportError(f"{base_url}: {exc!r}") from exc
        if answer.will_close:
            connection.close()
        return NodeAnswer(answer.status, answer.msg, body)
    raise AssertionError("unreachable")  # pragma: no cover


class VarnishPurge(PurgeBackend):
    name = "varnish"
    batch_size = 100  # keeps the header well under Varnish's 8 KiB http_req_hdr_len

    def send(self, batch: list[str], *, soft: bool) -> NodeAnswer:
        header = "xkey-softpurge" if soft else "xkey-purge"
        response: NodeAnswer | None = None
        for base_url in settings.CDN_VARNISH_URLS:
            response = _purge_node(base_url, header, " ".join(batch))
            if not response.is_success:
                return response  # a node that did not purge: the whole batch is retried
        if response is None:
            raise httpx.InvalidURL("CDN_VARNISH_URLS is empty")
        return response
