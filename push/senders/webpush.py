"""Web Push (RFC 8030) with an encrypted body (RFC 8291, aes128gcm: pywebpush and
http_ece) and VAPID authentication (RFC 8292: py-vapid). pywebpush encrypts; the POST
goes through our own client so the SSRF rules, timeouts and connection reuse hold."""

import json
import time
from urllib.parse import urlsplit

from django.conf import settings
from pywebpush import WebPusher

from push.credentials import vapid
from push.senders.http import http1_client, post, result_from_status
from push.senders.outgoing import Outcome, Outgoing, SendResult
from push.webpush_endpoints import EndpointRefused, webpush_endpoint_check

VAPID_TOKEN_SECONDS = 12 * 3600  # RFC 8292: at most 24 h


def vapid_authorization(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    claims = {
        "aud": f"{parts.scheme}://{parts.netloc}",
        "exp": int(time.time()) + VAPID_TOKEN_SECONDS,
        "sub": settings.PUSH_VAPID_SUBJECT,
    }
    return vapid().sign(claims)["Authorization"]


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
