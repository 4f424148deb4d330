"""Web Push (RFC 8030) with an encrypted body (RFC 8291, aes128gcm: pywebpush and
http_ece) and VAPID authentication (RFC 8292: py-vapid). pywebpush encrypts; the POST
goes through our own client so the SSRF rules, timeouts and connection reuse hold."""

import json
import threading
import time
from urllib.parse import urlsplit

from django.conf import settings
from pywebpush import WebPusher

from push.credentials import vapid
from push.senders.http import http1_client, post, result_from_status
from push.senders.outgoing import Outcome, Outgoing, SendResult
from push.webpush_endpoints import EndpointRefused, webpush_endpoint_check

VAPID_TOKEN_SECONDS = 12 * 3600  # RFC 8292: at most 24 h


VAPID_TOKEN_REUSE_SECONDS = 600  # one signature per push service per 10 minutes
_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
_tokens_lock = threading.Lock()


def vapid_authorization(endpoint: str) -> str:
    """The VAPID header for the endpoint's push service. A token names only the
    service's origin, so it is reused (10 minutes of its 12 h) for every subscription
    there: one ES256 signature per service, not per send."""
    parts = urlsplit(endpoint)
    audience = f"{parts.scheme}://{parts.netloc}"
    key = (audience, settings.PUSH_VAPID_SUBJECT, settings.PUSH_VAPID_PRIVATE_KEY)
    now = time.time()
    with _tokens_lock:
        cached = _tokens.get(key)
        if cached is not None and now - cached[1] < VAPID_TOKEN_REUSE_SECONDS:
            return cached[0]
    claims = {"aud": audience, "exp": int(now) + VAPID_TOKEN_SECONDS, "sub": settings.PUSH_VAPID_SUBJECT}
    header = vapid().sign(claims)["Authorization"]
    with _tokens_lock:
        _tokens[key] = (header, now)
    return header


def webpush_send(outgoing: Outgoing) -> SendResult:
    try:
        endpoint = webpush_endpoint_check(outgoing.address)  # the allow list may have shrunk
    except EndpointRefused as refusal:
        return SendResult(Outcome.REJECTED, error=f"endpoint refused: {refusal}")
    subscription = {"endpoint": endpoint, "keys": {"p256dh": outgoing.p256dh, "auth": outgoing.auth}}
    data = json.dumps(outgoing.payload, separators=(",", ":")).encode()
    body = WebPusher(subscription).encode(data, content_encoding="aes128gcm")["body"]
    headers = {
        "Authorization": vapid_authorization(endpoint),
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "TTL": str(settings.PUSH_TTL_SECONDS),
        "Urgency": "high" if outgoing.notification_type == "expense.large" else "normal",
    }
    response = post(http1_client(), endpoint, content=body, headers=headers)
    return response if isinstance(response, SendResult) else result_from_status(response)
