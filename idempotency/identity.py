"""What identifies an idempotent write: its scope and its fingerprint.

Scope = (org, user, SHA-256 of the key): one user's key never meets another user's,
nor the same user's key in another org. Fingerprint = SHA-256 of method, path and the
canonical JSON body (keys sorted, no whitespace, numbers as written), so a retry that
re-serialises the same object differently still matches, while a different amount,
method or path does not.
"""

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

HEADER = "Idempotency-Key"
# Writes outside any org (POST /v1/orgs) are scoped to the user alone.
NO_ORG = uuid.UUID(int=0)
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")


def key_is_valid(key: str) -> bool:
    """1-255 printable ASCII characters (space to tilde)."""
    return _VALID_KEY.fullmatch(key) is not None


@dataclass(frozen=True)
class IdempotencyScope:
    org_id: uuid.UUID
    user_id: uuid.UUID
    key_hash: bytes

    @classmethod
    def of(cls, *, org_id: uuid.UUID, user_id: uuid.UUID, key: str) -> "IdempotencyScope":
        return cls(org_id=org_id, user_id=user_id, key_hash=hashlib.sha256(key.encode("ascii")).digest())

    def lock_id(self) -> int:
        """A signed 64-bit id of the scope, for pg_advisory_xact_lock."""
        digest = hashlib.sha256(self.org_id.bytes + self.user_id.bytes + self.key_hash).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def redis_key(self) -> str:
        """Tagged by org (one key per command: the tag only spreads orgs over a cluster)."""
        return f"idem:{{{self.org_id.hex}}}:{self.user_id.hex}:{self.key_hash.hex()}"


def request_fingerprint(*, method: str, path: str, body: Any) -> bytes:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    digest = hashlib.sha256()
    for part in (method.upper(), path, canonical):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.digest()
