"""A finished response as kept for replays, in Postgres and in the Redis cache."""

from dataclasses import dataclass

from django.http import HttpResponse

REPLAYED_HEADER = "Idempotent-Replayed"
_FINGERPRINT_BYTES = 32


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: bytes
    status: int
    content_type: str
    body: bytes
    # Not part of the stored bytes: how long a copy may still be cached (None: full TTL).
    expires_in_ms: int | None = None

    def to_bytes(self) -> bytes:
        """Compact form for Redis: fingerprint, then "status content-type\\n", then the body."""
        return self.fingerprint + f"{self.status} {self.content_type}\n".encode("latin-1") + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> "StoredResponse":
        fingerprint, rest = data[:_FINGERPRINT_BYTES], data[_FINGERPRINT_BYTES:]
        head, _, body = rest.partition(b"\n")
        status, _, content_type = head.decode("latin-1").partition(" ")
        return cls(fingerprint=fingerprint, status=int(status), content_type=content_type, body=body)

    def replay(self) -> HttpResponse:
        """The stored status and byte-identical body, marked as a replay."""
        response = HttpResponse(self.body, status=self.status)
        if self.content_type:
            response["Content-Type"] = self.content_type
        else:
            del response["Content-Type"]  # e.g. 204: the original had none
        response[REPLAYED_HEADER] = "true"
        return response
