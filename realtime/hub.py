"""One Redis Pub/Sub connection per server process (on a Redis Cluster: one per shard,
i.e. per master owning a subscribed channel, with sharded SSUBSCRIBE), fanning each
org's live events out to that process's sockets of the org.

Publishing costs one PUBLISH per event whatever the number of sockets; each process
receives the event once and copies a reference into each local socket's bounded
queue. A socket whose queue is full is dropped from the hub at once (the consumer
then closes it), so a client that does not read cannot grow the server's memory.
If a Pub/Sub connection breaks (on a cluster: a master failed; or the server moved a
channel's slot away, SUNSUBSCRIBE), every socket is closed with 1012, the cluster's
slot map is reloaded, and clients resume with last_event_id: live events are never
silently skipped.

The hub also listens to the access channel and closes the sockets a revocation
concerns (realtime/access.py).
"""

import asyncio
import contextlib
import logging
import weakref
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis

from core.redis_clients import aredis_call, async_pubsub_redis, async_pubsub_target, async_topology_refresh
from realtime import keys
from realtime.access import parse_revocation
from realtime.stats import DeliveryCounter

logger = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_SECONDS = 5.0
SLOW_CONSUMER = (4408, "Slow consumer: too many undelivered events; reconnect with last_event_id")
HUB_RESTART = (1012, "Event feed restarted; reconnect with last_event_id")


@dataclass(frozen=True)
class LiveEvent:
    event_id: str
    frame: str
    committed_at: float
    poke: str = ""  # the change's sync.poke frame, sent right after the event


@dataclass(eq=False)
class Subscriber:
    """A socket's end of the hub: a bounded queue and a signal to close."""

    org_id: str
    queue: asyncio.Queue[LiveEvent]
    user_id: str = ""
    token_digest: str = ""
    closing: asyncio.Future[tuple[int, str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def offer(self, event: LiveEvent) -> bool:
        """Queue the event; False (and closing set) when the queue is full."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.close(SLOW_CONSUMER)
            return False
        return True

    def close(self, reason: tuple[int, str]) -> None:
        if not self.closing.done():
            self.closing.set_result(reason)


def parse_announcement(message: str) -> LiveEvent:
    """`<committed-at epoch> <frame>\n<poke frame>`, as realtime/publishing.py publishes it
    (JSON frames hold no raw newline)."""
    committed_at, _, frames = message.partition(" ")
    frame, _, poke = frames.partition("\n")
    start = len('{"event_id":"')
    event_id = frame[start : frame.index('"', start)]
    return LiveEvent(event_id=event_id, frame=frame, committed_at=float(committed_at), poke=poke)


class _Shard:
    """One Pub/Sub connection and its reader: the single node's (SUBSCRIBE), or one
    cluster master's (SSUBSCRIBE; a multi-channel SSUBSCRIBE must stay in one slot, so
    channels are subscribed one by one)."""

    def __init__(self, name: str, client: aioredis.Redis, *, sharded: bool) -> None:
        self.name = name
        self.sharded = sharded
        self.client = client
        self.pubsub = client.pubsub()
        self.reader: asyncio.Task[None] | None = None

    async def subscribe(self, channel: str) -> None:
        if self.sharded:
            await self.pubsub.ssubscribe(channel)
        else:
            await self.pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        if self.sharded:
            await self.pubsub.sunsubscribe(channel)
        else:
            await self.pubsub.unsubscribe(channel)

    async def close(self) -> None:
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        if self.sharded:
            with contextlib.suppress(Exception):
                await self.client.aclose()


class OrgEventHub:
    def __init__(self) -> None:
        self.deliveries = DeliveryCounter()
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self._single_client = async_pubsub_redis()
        self._shards: dict[str, _Shard] = {}
        self._channel_shard: dict[str, _Shard] = {}
        self._leaving: set[str] = set()  # channels we unsubscribe from ourselves
        self._generation = 0
        self._topology_stale = False
        self._access_subscribed = False
        self._flusher = asyncio.get_running_loop().create_task(self.deliveries.run_flusher())

    async def subscribe(
        self, *, org_id: str, queue_size: int, user_id: str = "", token_digest: str = ""
    ) -> Subscriber:
        """Register a socket; returns once the process is subscribed to the org's
        channel (and the access channel), so every event and revocation published
        after this call reaches it."""
        subscriber = Subscriber(
            org_id=org_id, queue=asyncio.Queue(maxsize=queue_size), user_id=user_id, token_digest=token_digest
        )
        channel = keys.org_channel(org_id)
        async with self._lock:
            local = self._subscribers.setdefault(org_id, set())
            local.add(subscriber)
            channels = [] if len(local) > 1 else [channel]
            if not self._access_subscribed:
                channels.append(keys.ACCESS_CHANNEL)
            try:
                # Behind the project's Redis breaker: a hung Redis costs a few sockets one
                # deadline each, then sockets are refused at once until it answers again.
                await aredis_call(lambda: self._subscribe_confirmed(channels))
            except BaseException:
                local.discard(subscriber)
                if not local:
                    del self._subscribers[org_id]
                raise
            self._access_subscribed = True
        return subscriber

    async def _shard_for(self, channel: str) -> _Shard:
        if self._topology_stale:
            await async_topology_refresh()
            self._topology_stale = False
        name, client = await async_pubsub_target(channel)
        shard = self._shards.get(name)
        if shard is None:
            sharded = client is not None
            shard = _Shard(name, client if client is not None else self._single_client, sharded=sharded)
            self._shards[name] = shard
        elif client is not None:
            await client.aclose()
        return shard

    async def _subscribe_confirmed(self, channels: list[str]) -> None:
        if not channels:
            return
        loop = asyncio.get_running_loop()
        waiting = {name: loop.create_future() for name in channels}
        self._confirmations.update(waiting)
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_SECONDS):  # connecting included
                for channel in channels:
                    shard = await self._shard_for(channel)
                    self._leaving.discard(channel)
                    await shard.subscribe(channel)
                    self._channel_shard[channel] = shard
                    self._ensure_reader(shard)
                await asyncio.shield(asyncio.gather(*waiting.values()))
        except BaseException as error:
            for name in channels:
                self._confirmations.pop(name, None)
            if isinstance(error, (redis.RedisError, OSError)):
                self._topology_stale = True  # e.g. a master that just died: reload the map
            raise

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        """Remove a socket; the process leaves the org's channel with its last socket."""
        async with self._lock:
            local = self._subscribers.get(subscriber.org_id)
            if local is not None:
                local.discard(subscriber)
                if local:
                    return
                del self._subscribers[subscriber.org_id]
            channel = keys.org_channel(subscriber.org_id)
            shard = self._channel_shard.pop(channel, None)
            if shard is not None:
                self._leaving.add(channel)
                with contextlib.suppress(redis.RedisError, OSError):
                    await shard.unsubscribe(channel)

    def _ensure_reader(self, shard: _Shard) -> None:
        if shard.reader is None or shard.reader.done():
            shard.reader = asyncio.get_running_loop().create_task(self._read(shard, self._generation))

    async def _read(self, shard: _Shard, generation: int) -> None:
        try:
            while True:
                message = await shard.pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                kind = message["type"]
                if kind in ("message", "smessage"):
                    self._dispatch(message["channel"], message["data"])
                elif kind in ("subscribe", "ssubscribe"):
                    confirmed = self._confirmations.pop(message["channel"], None)
                    if confirmed is not None and not confirmed.done():
                        confirmed.set_result(None)
                elif kind == "sunsubscribe" and message["channel"] not in self._leaving:
                    # The server dropped us: the channel's slot moved to another master.
                    raise redis.ConnectionError(f"shard channel {message['channel']} moved")
                elif kind == "sunsubscribe":
                    self._leaving.discard(message["channel"])
        except (redis.RedisError, OSError) as error:
            if generation != self._generation:
                return  # an earlier connection, already replaced
            logger.error("realtime hub lost its Redis Pub/Sub connection (%s): %s", shard.name, error)
            await self._restart()

    def _dispatch(self, channel: str, data: str) -> None:
        if channel == keys.ACCESS_CHANNEL:
            self._revoke(data)
            return
        org_id = channel[len("rt:live:{") : -1]
        local = self._subscribers.get(org_id)
        if not local:
            return
        event = parse_announcement(data)
        for subscriber in list(local):
            if not subscriber.offer(event):
                local.discard(subscriber)  # full: no more events for it; its consumer unsubscribes

    def _revoke(self, message: str) -> None:
        """Close (and stop feeding) the local sockets an access change concerns."""
        revocation = parse_revocation(message)
        if revocation is None:
            return
        for org_id, local in list(self._subscribers.items()):
            if revocation.org_id is not None and org_id != revocation.org_id:
                continue
            for subscriber in list(local):
                if revocation.matches(
                    user_id=subscriber.user_id, org_id=org_id, token_digest=subscriber.token_digest
                ):
                    local.discard(subscriber)
                    subscriber.close(revocation.code)

    async def _restart(self) -> None:
        """Close every local socket (clients resume with last_event_id) and start clean."""
        async with self._lock:
            for local in self._subscribers.values():
                for subscriber in local:
                    subscriber.close(HUB_RESTART)
            self._subscribers.clear()
            for confirmed in self._confirmations.values():
                if not confirmed.done():
                    confirmed.set_exception(ConnectionError("Pub/Sub connection lost"))
            self._confirmations.clear()
            self._access_subscribed = False
            self._generation += 1
            self._topology_stale = True
            shards, self._shards = list(self._shards.values()), {}
            self._channel_shard.clear()
            self._leaving.clear()
            for shard in shards:
                await shard.close()


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrgEventHub]" = weakref.WeakKeyDictionary()


def current_hub() -> OrgEventHub:
    """The hub of the running event loop (one per server process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = OrgEventHub()
    return hub
