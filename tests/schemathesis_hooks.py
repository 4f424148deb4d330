"""Schemathesis hooks for tests/test_api_schema.py (loaded through SCHEMATHESIS_HOOKS).

- Credentials: every request carries the tenant owner's token (a staff user's on the
  monitoring routes, so their answers are checked too, not only their 403), except the two routes
  that revoke the presented token (or all of its user's tokens): those get a token of a
  throwaway user each, so a revocation never turns the rest of the run into 401s.
- Formats the schema names that JSON Schema cannot state (push/openapi.py): a browser's
  P-256 public key, generated as a real point so a schema-valid subscription is one the
  API accepts.
"""

import base64
import os
import re
import uuid
from collections.abc import Iterator

import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import strategies as st

REVOKING = {("DELETE", "/v1/auth/token"), ("DELETE", "/v1/auth/tokens")}
_MAIN_TOKEN = os.environ["SCHEMATHESIS_TOKEN"]
_STAFF_TOKEN = os.environ["SCHEMATHESIS_STAFF_TOKEN"]
STAFF_PREFIXES = ("/v1/system/", "/v2/realtime/")  # monitoring routes: staff or METRICS_TOKEN
_throwaway: Iterator[str] = iter(os.environ["SCHEMATHESIS_THROWAWAY_TOKENS"].split(","))
_last_throwaway = [""]


@schemathesis.auth()
class TestTokens:
    def get(self, case: schemathesis.Case, context: object) -> str:
        return _MAIN_TOKEN

    def set(self, case: schemathesis.Case, data: str, context: object) -> None:
        token = _STAFF_TOKEN if case.operation.path.startswith(STAFF_PREFIXES) else data
        if (case.method.upper(), case.operation.path) in REVOKING:
            # Once the pool is spent the last (revoked) token is reused: a 401, as documented.
            _last_throwaway[0] = next(_throwaway, _last_throwaway[0])
            token = _last_throwaway[0]
        case.headers["Authorization"] = f"Token {token}"


def _p256_public_key(secret: int) -> str:
    point = (
        ec.derive_private_key(secret, ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode()


_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
schemathesis.openapi.format("p256-public-key", st.integers(1, _P256_ORDER - 1).map(_p256_public_key))


_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7E]{1,255}")


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, **kwargs: object) -> None:
    """An Idempotency-Key is unique per operation (CONTRACT §3), which a schema cannot
    state: a generated valid key (the same few values again and again) is made unique, so a
    schema-valid write is not a replay or a 422. Invalid keys are sent as generated."""
    key = case.headers.get("Idempotency-Key")
    if isinstance(key, str) and _IDEMPOTENCY_KEY.fullmatch(key):
        case.headers["Idempotency-Key"] = str(uuid.uuid4())
