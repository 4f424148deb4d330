"""Purge backends and the durable queue, against a local HTTP server that records the
calls and answers as scripted (200, 429 with Retry-After, 5xx, refused).

The server stands in for the Fastly and Cloudflare APIs only: these tests are about our
own logic (batching, auth headers, retries, the queue), not about those services.
"""

import datetime
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from edgecache.backends import PurgeFailed, purge_backend
from edgecache.backends.base import PurgeBackend
from edgecache.models import PurgeQueueEntry
from edgecache.purge import breaker_reset, purge_now
from edgecache.queue import purge_queue_drain
from finance.models import Expense
from finance.services import entry_create
from monitoring.metrics import cdn_purge_queue_depth, cdn_purges
from tenancy.models import Property
from tests.live_server import free_port

pytestmark = pytest.mark.django_db


def configured_backend() -> PurgeBackend:
    backend = purge_backend()
    assert backend is not None, "CDN_PROVIDER is none"
    return backend


@dataclass
class Recorder:
    """Calls received, and scripted answers: (status, headers, body) popped per call;
    when the script is empty the answer is `default`."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    default: tuple[int, dict[str, str], dict[str, Any]] = (200, {}, {"success": True, "status": "ok"})
    url: str = ""


@pytest.fixture
def cdn_api() -> Iterator[Recorder]:
    recorder = Recorder()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                recorder.calls.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "json": json.loads(body or b"null"),
                    }
                )
                status, headers, payload = recorder.script.pop(0) if recorder.script else recorder.default
            data = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {
                **headers,
                "Content-Type": "application/json",
                "Content-Length": str(len(data)),
            }.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fastly(settings: Any, cdn_api: Recorder) -> Recorder:
    settings.CDN_PROVIDER = "fastly"
    settings.CDN_FASTLY_API_URL = cdn_api.url
    settings.CDN_FASTLY_SERVICE_ID = "svc123"
    settings.CDN_FASTLY_API_TOKEN = "fastly-secret"
    settings.CDN_PURGE_BREAKER_SECONDS = 0
    breaker_reset()
    return cdn_api


@pytest.fixture
def cloudflare(settings: Any, cdn_api: Recorder) -> Recorder:
    settings.CDN_PROVIDER = "cloudflare"
    settings.CDN_CLOUDFLARE_API_URL = cdn_api.url
    settings.CDN_CLOUDFLARE_ZONE_ID = "zone9"
    settings.CDN_CLOUDFLARE_API_TOKEN = "cf-secret"
    settings.CDN_PURGE_BREAKER_SECONDS = 0
    breaker_reset()
    return cdn_api


def tags(n: int) -> list[str]:
    return [f"org-{i}-expenses" for i in range(n)]


def counter(provider: str, outcome: str) -> float:
    return cdn_purges.labels(provider=provider, outcome=outcome)._value.get()


def test_fastly_purges_by_surrogate_key_in_batches_of_at_most_256(fastly):
    ok_before = counter("fastly", "ok")
    assert purge_now(tags(600)) is True
    assert [len(call["json"]["surrogate_keys"]) for call in fastly.calls] == [256, 256, 88]
    assert [k for call in fastly.calls for k in call["json"]["surrogate_keys"]] == tags(600)
    for call in fastly.calls:
        assert call["path"] == "/service/svc123/purge"
        assert call["headers"]["Fastly-Key"] == "fastly-secret"
        assert "Fastly-Soft-Purge" not in call["headers"]  # hard purge: the contract needs it
    assert counter("fastly", "ok") - ok_before == 3


def test_fastly_soft_purge_is_asked_for_explicitly(fastly):
    configured_backend().purge(["org-1-summary"], soft=True)
    assert fastly.calls[0]["headers"]["Fastly-Soft-Purge"] == "1"


def test_cloudflare_purges_by_cache_tag_in_batches_of_at_most_100(cloudflare):
    assert purge_now(tags(250)) is True
    assert [len(call["json"]["tags"]) for call in cloudflare.calls] == [100, 100, 50]
    for call in cloudflare.calls:
        assert call["path"] == "/client/v4/zones/zone9/purge_cache"
        assert call["headers"]["Authorization"] == "Bearer cf-secret"


def test_cloudflare_200_with_success_false_is_a_failure(cloudflare):
    cloudflare.default = (200, {}, {"success": False, "errors": [{"code": 1134, "message": "bad"}]})
    with pytest.raises(PurgeFailed) as failure:
        configured_backend().purge(["org-1"])
    assert failure.value.remaining == ["org-1"]


def test_a_429_with_a_short_retry_after_is_waited_out_inline(fastly):
    fastly.script = [(429, {"Retry-After": "1"}, {"msg": "slow down"})]
    started = time.monotonic()
    assert purge_now(["org-1-summary"]) is True
    assert time.monotonic() - started >= 1.0
    assert len(fastly.calls) == 2
    assert not PurgeQueueEntry.objects.exists()


def test_a_429_with_a_long_retry_after_queues_the_purge_until_then(cloudflare):
    cloudflare.script = [(429, {"Retry-After": "30"}, {"success": False})]
    limited_before = counter("cloudflare", "rate_limited")
    assert purge_now(["org-1-summary", "org-1-expenses"]) is False
    entry = PurgeQueueEntry.objects.get()
    assert entry.tags == ["org-1-summary", "org-1-expenses"]
    assert entry.next_attempt_at >= timezone.now() + datetime.timedelta(seconds=28)
    assert counter("cloudflare", "rate_limited") - limited_before == 1
    assert cdn_purge_queue_depth._value.get() == 1

    # Not due yet: the drain leaves it alone and calls nobody.
    assert purge_queue_drain().sent == 0
    assert len(cloudflare.calls) == 1
    PurgeQueueEntry.objects.update(next_attempt_at=timezone.now())
    result = purge_queue_drain()
    assert (result.sent, result.failed, result.left) == (1, 0, 0)
    assert cloudflare.calls[-1]["json"]["tags"] == ["org-1-summary", "org-1-expenses"]
    assert cdn_purge_queue_depth._value.get() == 0


def test_a_5xx_on_a_later_batch_queues_only_what_was_not_purged(fastly):
    fastly.script = [(200, {}, {"status": "ok"}), (503, {}, {"msg": "down"})]
    assert purge_now(tags(600)) is False
    entry = PurgeQueueEntry.objects.get()
    assert entry.tags == tags(600)[256:]  # batch 1 went out; batches 2 and 3 wait
    assert "503" in entry.last_error

    # Still failing: the row stays, with a backoff and a count of attempts.
    PurgeQueueEntry.objects.update(next_attempt_at=timezone.now())
    fastly.script = [(500, {}, {"msg": "boom"})]
    result = purge_queue_drain()
    assert (result.sent, result.failed, result.left) == (0, 1, 1)
    entry.refresh_from_db()
    assert entry.attempts == 1 and entry.next_attempt_at > timezone.now()

    # Healthy again: the retry command sends the rest and empties the queue.
    PurgeQueueEntry.objects.update(next_attempt_at=timezone.now())
    call_command("cdn_purge_retry")
    assert not PurgeQueueEntry.objects.exists()
    assert [k for call in fastly.calls[-2:] for k in call["json"]["surrogate_keys"]] == tags(600)[256:]


def test_an_unreachable_cdn_queues_and_opens_the_breaker(settings, fastly):
    settings.CDN_FASTLY_API_URL = f"http://127.0.0.1:{free_port()}"  # nobody listens
    settings.CDN_PURGE_BREAKER_SECONDS = 30
    assert purge_now(["org-1-expenses"]) is False
    assert purge_now(["org-2-expenses"]) is False  # breaker open: queued without a call
    assert sorted(PurgeQueueEntry.objects.values_list("tags", flat=True)) == [
        ["org-1-expenses"],
        ["org-2-expenses"],
    ]
    assert "breaker" in PurgeQueueEntry.objects.get(tags=["org-2-expenses"]).last_error
    with pytest.raises(SystemExit) as exit_code:
        call_command("cdn_purge_retry")  # still unreachable: exit 1, rows kept
    assert exit_code.value.code == 1
    assert PurgeQueueEntry.objects.count() == 2
    breaker_reset()


def test_purges_wait_for_commit_and_a_rollback_purges_nothing(
    fastly, tenant, django_capture_on_commit_callbacks
):
    payload = {
        "model": Expense, "org": tenant.org, "created_by": tenant.users["owner"], "property_id": tenant.property.id,
        "amount": Decimal("5.00"), "currency": "EUR", "category": "x", "occurred_on": "2026-11-02",
    }  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        try:
            with transaction.atomic():
                entry_create(**payload)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    assert fastly.calls == []
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        entry_create(**payload)
        assert fastly.calls == []  # not before the commit
    org = tenant.org.id
    assert fastly.calls[0]["json"]["surrogate_keys"] == [f"org-{org}-expenses", f"org-{org}-summary"]


def test_finance_writes_purge_their_org_tags(fastly, tenant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        created = tenant.owner.post(tenant.url("/expenses"), tenant.entry_payload(), format="json")
    assert created.status_code == 201
    org = tenant.org.id
    assert fastly.calls[-1]["json"]["surrogate_keys"] == [f"org-{org}-expenses", f"org-{org}-summary"]
    with django_capture_on_commit_callbacks(execute=True):
        tenant.owner.patch(tenant.url(f"/expenses/{created.json()['id']}"), {"amount": "1.00"}, format="json")
        tenant.owner.delete(tenant.url(f"/expenses/{created.json()['id']}"))
    assert len(fastly.calls) == 3
    with django_capture_on_commit_callbacks(execute=True):
        tenant.owner.post(
            tenant.url("/properties"), {"name": "Annex", "currency": "EUR", "timezone": "UTC"}, format="json"
        )
    prop = Property.objects.get(org=tenant.org, name="Annex")
    assert fastly.calls[-1]["json"]["surrogate_keys"] == [f"org-{org}-properties", f"property-{prop.id}"]


def test_provider_none_purges_nothing(settings, cdn_api):
    settings.CDN_PROVIDER = "none"
    assert purge_now(["org-1"]) is True
    assert cdn_api.calls == [] and not PurgeQueueEntry.objects.exists()


def test_an_unknown_provider_is_a_clear_error(settings):
    settings.CDN_PROVIDER = "akamai"
    with pytest.raises(ValueError, match="CDN_PROVIDER"):
        purge_backend()


def test_a_failing_cdn_ends_the_retry_pass_at_the_first_failure(fastly):
    for n in range(3):
        PurgeQueueEntry.objects.create(tags=[f"org-{n}-summary"], last_error="queued")
    fastly.default = (500, {}, {"msg": "down"})
    result = purge_queue_drain()
    assert (result.sent, result.failed, result.left) == (0, 1, 3)
    assert len(fastly.calls) == 1  # not one timeout per row inside one transaction
    assert sorted(PurgeQueueEntry.objects.values_list("attempts", flat=True)) == [0, 0, 1]

    fastly.default = (200, {}, {"status": "ok"})
    PurgeQueueEntry.objects.update(next_attempt_at=timezone.now())
    assert purge_queue_drain().sent == 3
    assert not PurgeQueueEntry.objects.exists()


@pytest.fixture
def varnish_node(settings: Any) -> Iterator[dict[str, Any]]:
    """A stand-in for a Varnish node's PURGE handling (HTTP/1.1, keep-alive): records each
    purge with the client port it came on; `close_after` answers then closes the
    connection without saying so, as a node's idle timeout does between purges."""
    node: dict[str, Any] = {"calls": [], "status": 200, "close_after": False, "headers": {}, "body": b""}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PURGE(self) -> None:
            node["calls"].append((self.client_address[1], self.headers.get("xkey-purge")))
            close, node["close_after"] = node["close_after"], False  # decided before answering
            self.send_response(node["status"])
            for name, value in node["headers"].items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(node["body"])))
            self.end_headers()
            self.wfile.write(node["body"])
            self.close_connection = close

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.CDN_PROVIDER = "varnish"
    settings.CDN_VARNISH_URLS = [f"http://127.0.0.1:{server.server_port}"]
    try:
        yield node
    finally:
        server.shutdown()
        server.server_close()


def test_varnish_purges_reuse_one_connection_and_a_node_closing_it_loses_no_purge(varnish_node):
    backend = configured_backend()
    for n in range(3):
        backend.purge([f"org-{n}-expenses"])
    varnish_node["close_after"] = True
    backend.purge(["org-3-expenses"])  # answered, then the node closes the connection
    backend.purge(["org-4-expenses"])  # the reused connection is dead: sent again on a new one
    assert [tags for _, tags in varnish_node["calls"]] == [f"org-{n}-expenses" for n in range(5)]
    ports = [port for port, _ in varnish_node["calls"]]
    assert len(set(ports[:4])) == 1 and ports[4] != ports[0]


def test_varnish_refusing_or_unreachable_is_a_purge_failure(settings, varnish_node):
    varnish_node["status"] = 403  # not in the purgers ACL
    with pytest.raises(PurgeFailed) as refused:
        configured_backend().purge(["org-1-expenses"])
    assert refused.value.remaining == ["org-1-expenses"]
    settings.CDN_VARNISH_URLS = [f"http://127.0.0.1:{free_port()}"]  # nobody listens
    with pytest.raises(PurgeFailed) as unreachable:
        configured_backend().purge(["org-2-expenses"])
    assert unreachable.value.remaining == ["org-2-expenses"]


def test_varnish_answering_503_with_a_long_retry_after_queues_until_then(varnish_node):
    varnish_node.update(status=503, headers={"retry-after": "30"}, body=b"Backend fetch failed")
    with pytest.raises(PurgeFailed) as limited:
        configured_backend().purge(["org-1-expenses"])
    assert limited.value.retry_after == 30.0  # the header read whatever its case
    assert limited.value.remaining == ["org-1-expenses"]
    assert "varnish purge answered 503: Backend fetch failed" in str(limited.value)
