"""Provider credentials, read from settings and loaded once per process per value.

A kind is "configured" when everything its sender needs is set and loads; registering
a device of any other kind is refused (400), so no device waits for a sender that
cannot exist.
"""

import functools
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from google.oauth2 import service_account
from py_vapid import Vapid02
from py_vapid.utils import b64urlencode

from push.models import DeviceKind

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


class CredentialsMissing(Exception):
    """The settings for this kind are empty or do not load."""


# The sender threads share one loaded credential each (one cached OAuth token, one
# key); the lock keeps two threads from both loading it on a cache miss.
_loading = threading.Lock()


@functools.cache
def _vapid(private_key: str) -> Vapid02:
    try:
        return Vapid02.from_string(private_key)
    except Exception as error:  # py_vapid raises whatever cryptography raises
        raise CredentialsMissing(f"PUSH_VAPID_PRIVATE_KEY does not load: {type(error).__name__}") from None


def vapid() -> Vapid02:
    if not settings.PUSH_VAPID_PRIVATE_KEY:
        raise CredentialsMissing("PUSH_VAPID_PRIVATE_KEY is not set")
    with _loading:
        return _vapid(settings.PUSH_VAPID_PRIVATE_KEY)


def vapid_public_key() -> str:
    """The application server key for a browser's subscribe(): the uncompressed P-256
    point, URL-safe base64 without padding."""
    point = vapid().public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64urlencode(point)


@functools.cache
def _fcm_credentials(path: str, mtime: float) -> service_account.Credentials:
    try:
        return service_account.Credentials.from_service_account_file(path, scopes=[FCM_SCOPE])
    except (OSError, ValueError) as error:
        raise CredentialsMissing(f"PUSH_FCM_CREDENTIALS_FILE does not load: {type(error).__name__}") from None


def fcm_credentials() -> service_account.Credentials:
    """The service account (its token_uri comes from the file). Shared by the sender's
    threads: google-auth refreshes the access token when it nears expiry."""
    path = settings.PUSH_FCM_CREDENTIALS_FILE
    if not (path and settings.PUSH_FCM_PROJECT_ID):
        raise CredentialsMissing("PUSH_FCM_PROJECT_ID and PUSH_FCM_CREDENTIALS_FILE must be set")
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        raise CredentialsMissing("PUSH_FCM_CREDENTIALS_FILE cannot be read") from None
    with _loading:
        return _fcm_credentials(path, mtime)


@functools.cache
def _apns_key(path: str, mtime: float) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise CredentialsMissing(f"PUSH_APNS_KEY_FILE does not load: {type(error).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CredentialsMissing("PUSH_APNS_KEY_FILE is not a P-256 (ES256) key")
    return key


def apns_key() -> ec.EllipticCurvePrivateKey:
    """The .p8 token-signing key from Apple's developer account."""
    path = settings.PUSH_APNS_KEY_FILE
    if not (path and settings.PUSH_APNS_KEY_ID and settings.PUSH_APNS_TEAM_ID and settings.PUSH_APNS_TOPIC):
        raise CredentialsMissing(
            "PUSH_APNS_KEY_FILE, PUSH_APNS_KEY_ID, PUSH_APNS_TEAM_ID and PUSH_APNS_TOPIC must be set"
        )
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        raise CredentialsMissing("PUSH_APNS_KEY_FILE cannot be read") from None
    with _loading:
        return _apns_key(path, mtime)


_CHECKS = {DeviceKind.WEBPUSH: vapid, DeviceKind.FCM: fcm_credentials, DeviceKind.APNS: apns_key}


def kind_configured(kind: str) -> bool:
    try:
        _CHECKS[DeviceKind(kind)]()
    except CredentialsMissing:
        return False
    return True
