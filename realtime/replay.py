"""Events an org's stream still holds after a client's last_event_id, or the signal
that some are no longer kept (the client must then refetch by REST)."""

from dataclasses import dataclass

from realtime import keys
from realtime.event_ids import event_id_key, frame_with_id
from realtime.redis_connections import async_redis

REPLAY_BATCH = 500


@dataclass(frozen=True)
class Replay:
    frames: list[tuple[str, str]]  # (event_id, frame), in order
    complete: bool  # False: events after last_event_id were trimmed or the stream expired


async def events_since(*, org_id: str, last_event_id: str) -> Replay:
    client = async_redis()
    stream = keys.org_stream_key(org_id)
    try:
        info = await client.xinfo_stream(stream)
    except Exception as error:  # redis raises ResponseError "no such key"
        if "no such key" in str(error).lower():
            # The stream expired (idle for REALTIME_STREAM_TTL_SECONDS) or Redis lost it:
            # nothing proves the client missed nothing.
            return Replay(frames=[], complete=False)
        raise
    max_deleted = info.get("max-deleted-entry-id") or "0-0"
    complete = event_id_key(max_deleted) <= event_id_key(last_event_id)
    frames: list[tuple[str, str]] = []
    start = "(" + last_event_id
    while True:
        batch = await client.xrange(stream, min=start, max="+", count=REPLAY_BATCH)
        frames += [(event_id, frame_with_id(event_id, fields["b"])) for event_id, fields in batch]
        if len(batch) < REPLAY_BATCH:
            return Replay(frames=frames, complete=complete)
        start = "(" + batch[-1][0]
