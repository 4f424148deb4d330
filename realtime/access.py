"""Revocation on open sockets (CONTRACT §1 "Revocation", §5).

After an access change commits, `access_change_publish` announces it on one Redis
Pub/Sub channel that every realtime process's hub listens to; each hub closes its
matching sockets at once: 4401 when the socket's token was revoked (or all of the
user's tokens), 4404 when the user was removed from the socket's org. A role change
closes nothing: every role may read the stream.

The announcement is a change-log handler: if Redis refused it, the outbox worker
retries it. Backstops, for an announcement that comes late or never: each socket
re-checks its token and membership every REALTIME_ACCESS_RECHECK_SECONDS and right
after joining the hub (a revocation between the connect check and the subscription
is not missed), and closes at its token's expiry time.
"""

import json
import logging
from dataclasses import dataclass
from typing import Any

import redis

from accounts.access_topics import TOPIC_MEMBERSHIP_REMOVED, TOPIC_TOKENS_REVOKED
from changelog.dispatch import Change
from core.redis_clients import publish_command, redis_call, sync_redis
from realtime import keys

logger = logging.getLogger(__name__)

TOKEN_INVALID = (4401, "Token revoked or expired")
NOT_A_MEMBER = (4404, "No longer a member of this organization")


@dataclass(frozen=True)
class Revocation:
    """What the hub needs to find the sockets to close."""

    user_id: str
    org_id: str | None  # None: every org
    digests: frozenset[str] | None  # None: every token of the user
    code: tuple[int, str]

    def matches(self, *, user_id: str, org_id: str, token_digest: str) -> bool:
        if user_id != self.user_id:
            return False
        if self.org_id is not None and org_id != self.org_id:
            return False
        return self.digests is None or token_digest in self.digests


def access_change_publish(change: Change) -> None:
    """Handler of access changes: announce the ones that close sockets."""
    if change.topic not in (TOPIC_TOKENS_REVOKED, TOPIC_MEMBERSHIP_REMOVED):
        return
    message = json.dumps(
        {"topic": change.topic, "user_id": change.user_id, "org_id": change.org_id, "data": change.data}
    )
    try:
        redis_call(lambda: sync_redis().execute_command(publish_command(), keys.ACCESS_CHANNEL, message))
    except redis.RedisError as error:
        # Raised, so the outbox worker announces it again once Redis is back; the
        # sockets' own re-check closes them meanwhile at the latest.
        logger.error("realtime: access change not announced yet: %s", error)
        raise


def parse_revocation(message: str) -> Revocation | None:
    try:
        body: dict[str, Any] = json.loads(message)
        topic, user_id = body["topic"], str(body["user_id"])
        data = body.get("data") or {}
    except (ValueError, KeyError, TypeError):
        logger.warning("realtime: ignoring a malformed access announcement")
        return None
    if topic == TOPIC_TOKENS_REVOKED:
        digests = None if data.get("all") else frozenset(data.get("digests") or ())
        return Revocation(user_id=user_id, org_id=None, digests=digests, code=TOKEN_INVALID)
    if topic == TOPIC_MEMBERSHIP_REMOVED and body.get("org_id"):
        return Revocation(user_id=user_id, org_id=str(body["org_id"]), digests=None, code=NOT_A_MEMBER)
    return None
