"""Publish an org's event after commit: append to the org's Redis Stream and announce
it on the org's Pub/Sub channel, in one Lua script.

The stream id is the event id. Doing XADD and PUBLISH atomically makes the live order
equal to the stream order, so a resuming client's replay (XRANGE) and live events
meet without gap or duplicate (see realtime/consumers.py).

Redis being down never fails the write (short timeouts, and the project's Redis
breaker, core/redis_clients.py, skips Redis while it is open): the event is lost for live sockets, logged and
counted (`realtime_events_lost_total`); clients see the change on their next REST read
or reconnect (docs/realtime.md, "Redis down at commit").
"""

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from core.redis_clients import redis_call, sync_redis
from monitoring.metrics import realtime_events_lost
from realtime import keys

logger = logging.getLogger(__name__)

# ARGV: body (JSON without event_id), maxlen, ttl seconds, committed-at epoch seconds.
_APPEND_AND_ANNOUNCE = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'b', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[4] .. ' {"event_id":"' .. id .. '",' .. string.sub(ARGV[1], 2))
redis.call('HINCRBY', KEYS[3], 'events_published', 1)
return id
"""


def event_body(*, event_type: str, org_id: str, committed_at: float, data: dict[str, Any]) -> str:
    """The event as JSON, without its event_id (Redis assigns that on XADD)."""
    event = {
        "type": event_type,
        "org_id": org_id,
        "ts": datetime.fromtimestamp(committed_at, tz=UTC).isoformat(),
        "data": data,
    }
    return json.dumps(event, cls=DjangoJSONEncoder, separators=(",", ":"))


def event_publish(*, org_id: str, event_type: str, data: dict[str, Any]) -> str | None:
    """Publish now (call only after commit). Returns the event id, None if lost."""
    committed_at = time.time()
    body = event_body(event_type=event_type, org_id=org_id, committed_at=committed_at, data=data)
    client = sync_redis()
    try:
        return redis_call(
            lambda: client.eval(
                _APPEND_AND_ANNOUNCE,
                3,
                keys.org_stream_key(org_id),
                keys.org_channel(org_id),
                keys.STATS_KEY,
                body,
                settings.REALTIME_STREAM_MAXLEN,
                settings.REALTIME_STREAM_TTL_SECONDS,
                f"{committed_at:.6f}",
            )
        )
    except redis.RedisError as error:
        realtime_events_lost.inc()
        logger.error(
            "realtime event lost (Redis unavailable): type=%s org=%s error=%s", event_type, org_id, error
        )
        return None


def event_publish_on_commit(*, org_id: str, event_type: str, data: dict[str, Any]) -> None:
    """Publish when the surrounding transaction commits; never for a rollback."""
    transaction.on_commit(lambda: event_publish(org_id=org_id, event_type=event_type, data=data))
