"""Events an org's stream still holds after a client's last_event_id, or the signal
that some may be gone (the client must then refetch by REST).

A stream loses events two ways: trimming (`MAXLEN ~`, oldest first) and expiry (the
key lives REALTIME_STREAM_TTL_SECONDS after its newest event). So, for a client's
last id L, with F the oldest id kept:
- the stream was trimmed and L < F: events after L may be gone: resync;
- the stream is missing: any event after L would have kept it alive until now unless
  L is older than the TTL: resync only then;
- never trimmed, but L older than F by more than the TTL: L belongs to an earlier,
  expired stream: resync.
- L is newer than the newest id the stream ever generated: the stream lost its tail
  (a cluster master failed over before its replica had it): resync.
Doubt always resolves to resync: the cost of a false one is one REST refetch.
Redis losing the whole stream (restart without persistence) is not detectable here;
see docs/realtime.md and docs/redis.md.
"""

from dataclasses import dataclass
from functools import partial
from typing import cast

import redis
from django.conf import settings

from core.redis_clients import aredis_call, async_redis
from core.redis_keys import atomic_script
from realtime import keys
from realtime.event_ids import event_id_key, frame_with_id

REPLAY_BATCH = 500
MAX_SEQUENCE = 2**64 - 1

# The newest id, or for a missing stream an id below any the stream will ever get
# (XADD on a new stream uses the current millisecond), read atomically with TIME.
_POSITION = f"""
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest > 0 then return newest[1][1] end
local now = redis.call('TIME')
return (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - 1) .. '-{MAX_SEQUENCE}'
"""
atomic_script("realtime.stream_position", _POSITION, keys=lambda s: [keys.org_stream_key(s.org_id)])


@dataclass(frozen=True)
class Replay:
    frames: list[tuple[str, str]]  # (event_id, frame), in order
    complete: bool  # False: events after last_event_id may be gone (refetch by REST)
    position: str  # the id the live feed continues after


async def stream_position(*, org_id: str) -> str:
    """The id live events follow: every event published from now on is greater."""
    client = async_redis()
    return await aredis_call(lambda: client.eval(_POSITION, 1, keys.org_stream_key(org_id)))


async def _now_ms() -> int:
    seconds, microseconds = await aredis_call(async_redis().time)
    return seconds * 1000 + microseconds // 1000


async def events_since(*, org_id: str, last_event_id: str) -> Replay:
    client = async_redis()
    stream = keys.org_stream_key(org_id)
    last = event_id_key(last_event_id)
    ttl_ms = settings.REALTIME_STREAM_TTL_SECONDS * 1000
    try:
        info = await aredis_call(lambda: client.xinfo_stream(stream))
    except redis.ResponseError:  # no such key
        if last[0] >= await _now_ms() - ttl_ms:
            return Replay(frames=[], complete=True, position=last_event_id)
        return Replay(frames=[], complete=False, position=await stream_position(org_id=org_id))
    if last > event_id_key(info["last-generated-id"]):
        # The client saw an event this stream never made: Redis lost the stream's tail
        # (a master failed over before replicating it, or restarted): resync.
        return Replay(frames=[], complete=False, position=info["last-generated-id"])
    first = event_id_key(info["first-entry"][0]) if info.get("first-entry") else None
    trimmed = int(info["entries-added"]) > int(info["length"])
    if first is not None and ((trimmed and last < first) or (not trimmed and last[0] < first[0] - ttl_ms)):
        return Replay(frames=[], complete=False, position=info["last-generated-id"])
    frames: list[tuple[str, str]] = []
    start = "(" + last_event_id
    while True:
        # decode_responses: ids and fields are str (redis-py's types cannot say so)
        batch = cast(
            list[tuple[str, dict[str, str]]],
            await aredis_call(partial(client.xrange, stream, min=start, max="+", count=REPLAY_BATCH)),
        )
        frames += [(event_id, frame_with_id(event_id, fields["b"])) for event_id, fields in batch]
        if len(batch) < REPLAY_BATCH:
            position = frames[-1][0] if frames else last_event_id
            return Replay(frames=frames, complete=True, position=position)
        start = "(" + batch[-1][0]
