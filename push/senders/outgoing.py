"""What a sender gets (plain data: senders run in threads and never touch the database)
and what it answers."""

import enum
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outgoing:
    delivery_id: str
    kind: str  # webpush | fcm | apns
    address: str  # endpoint URL or token
    notification_type: str  # expense.large | sync.poke
    payload: dict[str, Any]
    collapse_key: str | None = None  # same key: the device keeps only the newest
    p256dh: str = ""
    auth: str = ""


class Outcome(enum.Enum):
    SENT = "sent"
    GONE = "gone"  # the subscription or token no longer exists: deactivate the device
    RETRY = "retry"  # 408/429/5xx, or nothing reached the service: try again later
    REJECTED = "rejected"  # anything else: never resent


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    status_code: int | None = None
    retry_after: float | None = None  # seconds the service asked us to wait
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
