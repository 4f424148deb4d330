"""Firebase Cloud Messaging, HTTP v1 API: one data message per device.

Auth is OAuth 2.0 for a service account (RFC 7523): google-auth signs a JWT with the
account's key and trades it at the file's `token_uri` for a bearer token, refreshed
shortly before it expires. firebase-admin would do the same but hard-codes
fcm.googleapis.com; our POST goes to PUSH_FCM_ENDPOINT, so a local server can stand in.
"""

import threading
from typing import cast

import google.auth.transport.requests
from django.conf import settings
from google.auth.exceptions import GoogleAuthError

from push.credentials import fcm_credentials
from push.senders.http import http1_client, post, result_from_status
from push.senders.outgoing import Outcome, Outgoing, SendResult

_token_lock = threading.Lock()
UNREGISTERED_CODES = frozenset({"UNREGISTERED", "NOT_FOUND"})


def fcm_access_token(*, force_refresh: bool = False) -> str:
    credentials = fcm_credentials()
    with _token_lock:
        if force_refresh or not credentials.valid:
            credentials.refresh(google.auth.transport.requests.Request())
        return cast(str, credentials.token)  # set by a refresh; google-auth types it Optional


def fcm_message(outgoing: Outgoing) -> dict:
    """Data values must be strings in FCM; the app reads `type` first."""
    android: dict[str, str] = {
        "priority": "high" if outgoing.notification_type == "expense.large" else "normal",
        "ttl": f"{settings.PUSH_TTL_SECONDS}s",
    }
    if outgoing.collapse_key:
        android["collapse_key"] = outgoing.collapse_key
    data = {key: "" if value is None else str(value) for key, value in outgoing.payload.items()}
    return {"message": {"token": outgoing.address, "data": data, "android": android}}


def _error_code(body: object) -> str:
    """FCM's error detail: details[].errorCode (UNREGISTERED...), else error.status."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return ""
    error = body["error"]
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status") or "")


def fcm_send(outgoing: Outgoing) -> SendResult:
    try:
        token = fcm_access_token()
    except (GoogleAuthError, OSError) as error:  # the token endpoint is down or refused us
        return SendResult(Outcome.RETRY, error=f"oauth token: {type(error).__name__}")
    url = f"{settings.PUSH_FCM_ENDPOINT.rstrip('/')}/v1/projects/{settings.PUSH_FCM_PROJECT_ID}/messages:send"
    response = post(
        http1_client(), url, json=fcm_message(outgoing), headers={"Authorization": f"Bearer {token}"}
    )
    if isinstance(response, SendResult):
        return response
    if response.status_code == 401:  # our token expired early or was revoked: a fresh one next time
        fcm_access_token(force_refresh=True)
        return SendResult(Outcome.RETRY, 401, error="oauth token refused")
    try:
        code = _error_code(response.json()) if response.status_code >= 400 else ""
    except ValueError:
        code = ""
    if code in UNREGISTERED_CODES:
        return SendResult(Outcome.GONE, response.status_code, error=code)
    return result_from_status(response, error=code)
