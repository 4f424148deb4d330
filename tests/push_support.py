"""Push test helpers: provider credentials made on the spot, a browser's subscription
keys, and the real worker process (manage.py push_worker) against the test database."""

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ROOT = Path(__file__).resolve().parent.parent
FCM_PROJECT = "demo-hotels"
APNS_TOPIC = "com.example.hotels"
APNS_KEY_ID = "ABC123DEFG"
APNS_TEAM_ID = "TEAM123456"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def fcm_service_account(folder: Path, token_uri: str) -> tuple[Path, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": FCM_PROJECT,
        "private_key_id": "local-key-1",
        "private_key": pem,
        "client_email": f"push@{FCM_PROJECT}.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    path = folder / "fcm-service-account.json"
    path.write_text(json.dumps(info))
    return path, key


def apns_signing_key(folder: Path) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = folder / "AuthKey.p8"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path, key


class Browser:
    """What a browser's PushManager.subscribe() makes: a P-256 key pair and an auth secret."""

    def __init__(self, endpoint: str) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth_secret = os.urandom(16)
        self.endpoint = endpoint
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.subscription: dict[str, Any] = {  # PushSubscription.toJSON()
            "endpoint": endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth_secret)},
        }

    def decrypt(self, body: bytes) -> Any:
        import http_ece

        plain = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth_secret, version="aes128gcm"
        )
        return json.loads(plain)


def provider_env(
    *, fcm_file: Path | None = None, fcm_url: str = "", apns_file: Path | None = None, apns_url: str = ""
) -> dict[str, str]:
    env: dict[str, str] = {}
    if fcm_file is not None:
        env |= {
            "PUSH_FCM_PROJECT_ID": FCM_PROJECT,
            "PUSH_FCM_CREDENTIALS_FILE": str(fcm_file),
            "PUSH_FCM_ENDPOINT": fcm_url,
        }
    if apns_file is not None:
        env |= {
            "PUSH_APNS_KEY_FILE": str(apns_file),
            "PUSH_APNS_KEY_ID": APNS_KEY_ID,
            "PUSH_APNS_TEAM_ID": APNS_TEAM_ID,
            "PUSH_APNS_TOPIC": APNS_TOPIC,
            "PUSH_APNS_ENDPOINT": apns_url,
        }
    return env


def apply_env_to_settings(settings: Any, env: dict[str, str]) -> None:
    """The same provider settings in this (test) process, for registration."""
    for name, value in env.items():
        setattr(settings, name, value)


@contextmanager
def push_worker(database_url: str, metrics_dir: Path, **extra_env: str) -> Iterator[subprocess.Popen]:
    """`manage.py push_worker` as production runs it, on the test database."""
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "DATABASE_URL": database_url,
        "REPLICA_URLS": "",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "LOG_FORMAT": "plain",
        "PUSH_WORKER_POLL_SECONDS": "0.5",
        **extra_env,
    }
    process = subprocess.Popen([sys.executable, "manage.py", "push_worker"], cwd=ROOT, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def metric_value(metrics_dir: Path, name: str, **labels: str) -> float:
    """A counter's value summed over the worker processes' metric files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
