"""Apple Push Notification service over HTTP/2 with token (JWT, ES256) auth.

A small client of our own over httpx (HTTP/2 via h2): the maintained Python APNs
libraries (aioapns, apns2) hard-code Apple's two hosts, so they cannot be pointed at
PUSH_APNS_ENDPOINT and tested against a local server. The provider token is reused
for 40 minutes (Apple refuses tokens older than an hour and throttles ones renewed
more often than every 20 minutes).
"""

import json
import threading
import time

import jwt
from django.conf import settings

from push.credentials import apns_key
from push.senders.http import http2_client, post, result_from_status
from push.senders.outgoing import Outcome, Outgoing, SendResult

TOKEN_REUSE_SECONDS = 40 * 60
GONE_REASONS = frozenset({"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"})
_token_lock = threading.Lock()
_token: tuple[str, float, tuple[str, str]] | None = None  # (jwt, issued at, (key id, team id))


def apns_provider_token(*, force_new: bool = False) -> str:
    global _token  # noqa: PLW0603 (one token per process, shared by the sender threads)
    identity = (settings.PUSH_APNS_KEY_ID, settings.PUSH_APNS_TEAM_ID)
    with _token_lock:
        now = time.time()
        if force_new or _token is None or _token[2] != identity or now - _token[1] > TOKEN_REUSE_SECONDS:
            token = jwt.encode(
                {"iss": settings.PUSH_APNS_TEAM_ID, "iat": int(now)},
                apns_key(),
                algorithm="ES256",
                headers={"kid": settings.PUSH_APNS_KEY_ID},
            )
            _token = (token, now, identity)
        return _token[0]


def apns_request(outgoing: Outgoing) -> tuple[dict[str, str], dict]:
    """Headers and JSON body: a visible alert for a large expense, a silent
    background poke for sync."""
    alert = outgoing.notification_type == "expense.large"
    payload = outgoing.payload
    if alert:
        aps: dict = {
            "alert": {"title": "Large expense", "body": f"{payload.get('amount')} {payload.get('currency')}"},
            "sound": "default",
        }
    else:
        aps = {"content-available": 1}
    headers = {
        "apns-topic": settings.PUSH_APNS_TOPIC,
        "apns-push-type": "alert" if alert else "background",
        "apns-priority": "10" if alert else "5",
        "apns-expiration": str(int(time.time()) + settings.PUSH_TTL_SECONDS),
        "apns-id": outgoing.delivery_id,
    }
    if outgoing.collapse_key:
        headers["apns-collapse-id"] = outgoing.collapse_key
    return headers, {"aps": aps, **payload}


def apns_send(outgoing: Outgoing) -> SendResult:
    headers, body = apns_request(outgoing)
    headers["authorization"] = f"bearer {apns_provider_token()}"
    url = f"{settings.PUSH_APNS_ENDPOINT.rstrip('/')}/3/device/{outgoing.address}"
    content = json.dumps(body, separators=(",", ":")).encode()
    response = post(http2_client(), url, content=content, headers=headers)
    if isinstance(response, SendResult):
        return response
    reason = ""
    if response.status_code >= 400:
        try:
            reason = str(response.json().get("reason", ""))
        except (ValueError, AttributeError):
            reason = ""
    if reason in GONE_REASONS:
        return SendResult(Outcome.GONE, response.status_code, error=reason)
    if reason in ("ExpiredProviderToken", "InvalidProviderToken"):
        apns_provider_token(force_new=True)
        return SendResult(Outcome.RETRY, response.status_code, error=reason)
    return result_from_status(response, error=reason)
