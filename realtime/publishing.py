"""Publish an org's changes to its sockets, in version order, once each.

A change handler (registered in realtime/apps.py) appends the event to the org's Redis
Stream and announces it on the org's Pub/Sub channel, in one Lua script that also
keeps the org's last published version:

- the version right after the last one: published;
- a version at or below it: a duplicate (a retry, or the worker re-delivering a change
  the request thread already published): skipped;
- a version further ahead: some earlier change is not published yet (its process died
  after commit, or Redis refused it). The publisher first publishes the missing ones
  from the outbox (they are committed: the counter lock orders commits), then its own.

So the stream, the live feed and the replay are in version order without gaps or
duplicates, whoever publishes. The live announcement also carries the change's
`sync.poke` frame (CONTRACT §10), which sockets get right after the event. Pokes are
not kept in the stream: a poke only says "pull now", a reconnecting client pulls once
anyway (docs/sync.md), and replayed events carry their `version` too. The stream id
is the event id (`last_event_id` replay).
On a Redis Cluster the script runs on the org's shard (its keys share the org's hash
tag) and announces with SPUBLISH, so only that shard carries the org's live events;
the global `events_published` figure is added after it, alone (a figure lost with a
failing Redis is a figure, never an event).
Redis failing (or the Redis breaker open) raises: the change stays in the outbox and is published again once Redis
takes writes (docs/changelog.md). If Redis lost the org's last version (a restart
without persistence), the lowest undelivered version in the outbox is the floor.
"""

import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from changelog.dispatch import Change
from changelog.selectors import outbox_changes_between, outbox_lowest_pending_version
from core.redis_clients import pipeline_eval, publish_command, redis_call, sync_redis
from core.redis_keys import atomic_script
from realtime import keys

logger = logging.getLogger(__name__)

PUBLISHED_ENTITIES = frozenset({"expense", "revenue", "property"})

# KEYS: stream, channel, last-version key (all tagged by the org: one slot).
# ARGV: body (JSON without event_id), maxlen, ttl seconds, committed-at epoch seconds,
#       version, floor ('' = none: report 'unknown' when Redis has no last version),
#       force ('1': accept a version past a gap that no longer exists anywhere), poke frame,
#       'PUBLISH' or 'SPUBLISH' (a cluster's shard channel).
_PUBLISH_IN_ORDER = """
local last = redis.call('GET', KEYS[3])
if not last then
  if ARGV[6] == '' then return {'unknown', ''} end
  last = ARGV[6]
end
local version = tonumber(ARGV[5])
local previous = tonumber(last)
if version <= previous then return {'duplicate', last} end
if version > previous + 1 and ARGV[7] ~= '1' then return {'gap', last} end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'b', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[3])
redis.call(ARGV[9], KEYS[2], ARGV[4] .. ' {"event_id":"' .. id .. '",' .. string.sub(ARGV[1], 2) .. '\\n' .. ARGV[8])
return {'published', id}
"""


def _script_keys(org_id: str) -> list[str]:
    """_PUBLISH_IN_ORDER's KEYS for an org."""
    return [keys.org_stream_key(org_id), keys.org_channel(org_id), keys.org_version_key(org_id)]


atomic_script("realtime.publish_in_order", _PUBLISH_IN_ORDER, keys=lambda s: _script_keys(s.org_id))


def event_body(
    *, event_type: str, org_id: str, version: int, committed_at: float, data: dict[str, Any]
) -> str:
    """The event as JSON, without its event_id (Redis assigns that on XADD)."""
    event = {
        "type": event_type,
        "org_id": org_id,
        "version": version,
        "ts": datetime.fromtimestamp(committed_at, tz=UTC).isoformat(),
        "data": data,
    }
    return json.dumps(event, cls=DjangoJSONEncoder, separators=(",", ":"))


def poke_frame(*, org_id: str, version: int) -> str:
    """The `sync.poke` sockets get after each change: pull now (CONTRACT §10)."""
    return json.dumps({"type": "sync.poke", "org_id": org_id, "version": version}, separators=(",", ":"))


@dataclass(frozen=True)
class OutgoingEvent:
    """One change to publish as its org's `version` (_PUBLISH_IN_ORDER's arguments).

    `floor`: the last version to assume when Redis has none ('' = report 'unknown');
    `force`: publish past a gap that no longer exists anywhere."""

    org_id: str
    version: int
    topic: str
    data: dict[str, Any]
    committed_at: float
    floor: str = ""
    force: bool = False

    @classmethod
    def of(cls, change: Change) -> "OutgoingEvent | None":
        """The event a change publishes; None for a change that publishes none."""
        if change.version is None or change.org_id is None or change.entity not in PUBLISHED_ENTITIES:
            return None
        return cls(
            org_id=change.org_id,
            version=change.version,
            topic=change.topic,
            data=change.data,
            committed_at=change.committed_at,
        )

    def script_keys(self) -> list[str]:
        return _script_keys(self.org_id)

    def script_args(self) -> list[str | int]:
        body = event_body(
            event_type=self.topic,
            org_id=self.org_id,
            version=self.version,
            committed_at=self.committed_at,
            data=self.data,
        )
        return [
            body,
            settings.REALTIME_STREAM_MAXLEN,
            settings.REALTIME_STREAM_TTL_SECONDS,
            f"{self.committed_at:.6f}",
            self.version,
            self.floor,
            "1" if self.force else "",
            poke_frame(org_id=self.org_id, version=self.version),
            publish_command(),
        ]


def _publish(event: OutgoingEvent) -> tuple[str, str]:
    script_keys, args = event.script_keys(), event.script_args()
    client = sync_redis()
    # Behind the project's one Redis breaker (core/redis_clients.py): while Redis is down
    # this raises at once, and the change waits in the outbox for the worker's retry.
    outcome, detail = redis_call(
        lambda: client.eval(_PUBLISH_IN_ORDER, len(script_keys), *script_keys, *args)
    )
    if outcome == "published":
        _count_published(client)
    return outcome, detail


def _count_published(client: Any, count: int = 1) -> None:
    try:
        redis_call(lambda: client.hincrby(keys.STATS_KEY, "events_published", count))
    except redis.RedisError as error:  # a figure lost, never an event
        logger.warning("realtime: events_published not counted: %s", error)


def event_publish(*, org_id: str, event_type: str, data: dict[str, Any]) -> str:
    """Publish one event as the org's next version, outside the change log; returns its
    event id. For benchmarks and tests of the feed itself: services record changes
    (changelog) and never call this."""
    client = sync_redis()
    while True:
        last = int(client.get(keys.org_version_key(org_id)) or 0)
        outcome, detail = _publish(
            OutgoingEvent(
                org_id=org_id,
                version=last + 1,
                topic=event_type,
                data=data,
                committed_at=time.time(),
                floor=str(last),
            )
        )
        if outcome == "published":
            return detail  # else another publisher took that version: try the next one


def publish_change(change: Change) -> None:
    """The realtime handler: publish `change` after every earlier version of its org."""
    own = OutgoingEvent.of(change)
    if own is None:
        return
    org_id, version = own.org_id, own.version

    def publish_own(*, floor: str = "", force: bool = False) -> tuple[str, str]:
        return _publish(replace(own, floor=floor, force=force))

    outcome, detail = publish_own()
    if outcome == "unknown":
        lowest = outbox_lowest_pending_version(database=change.database, org_id=org_id)
        outcome, detail = publish_own(floor=str(min(version, lowest if lowest is not None else version) - 1))
    if outcome != "gap":
        return
    last = int(detail)
    for missing_version, topic, data, committed_at in outbox_changes_between(
        database=change.database, org_id=org_id, after=last, before=version
    ):
        if topic.partition(".")[0] not in PUBLISHED_ENTITIES:
            continue
        # The floor too: while Redis holds no last version for the org, an empty floor
        # would publish nothing ('unknown') and a concurrent publisher of an earlier
        # version could then make ours look like a gap, skipping the ones between.
        _publish(
            OutgoingEvent(
                org_id=org_id,
                version=missing_version,
                topic=topic,
                data=data,
                committed_at=committed_at,
                floor=str(last),
                force=missing_version != last + 1,
            )
        )
        last = missing_version
    outcome, _ = publish_own(floor=str(last))
    if outcome == "gap":  # versions that are nowhere any more (dead-lettered and pruned by hand)
        logger.warning("realtime: org %s skips unrecoverable versions %s..%s", org_id, last + 1, version - 1)
        publish_own(force=True)


def publish_changes(changes: list[Change]) -> None:
    """The realtime handler for several changes (in commit order): one Redis round trip
    (a pipeline of the same script, not a transaction; on a Redis Cluster one per node)
    for all of them. An org whose
    event met a gap or an unknown last version goes on from that change one by one,
    through publish_change (which fills the gap from the outbox)."""
    published = [(change, event) for change in changes if (event := OutgoingEvent.of(change)) is not None]
    if not published:
        return
    client = sync_redis()

    def run() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for _, event in published:
            pipeline_eval(pipe, _PUBLISH_IN_ORDER, event.script_keys(), event.script_args())
        return pipe.execute(raise_on_error=True)

    stalled: set[str] = set()  # orgs whose later changes go one by one
    outcomes = redis_call(run)
    if sum(outcome == "published" for outcome, _ in outcomes):
        _count_published(client, sum(outcome == "published" for outcome, _ in outcomes))
    for (change, event), (outcome, _) in zip(published, outcomes, strict=True):
        if event.org_id in stalled or outcome not in ("published", "duplicate"):
            stalled.add(event.org_id)
            publish_change(change)
