"""Per-user and per-org connection caps that hold across all server processes.

Each open socket holds a lease: its connection id is a member of the user's, the org's
and a global Redis sorted set, scored by the lease's expiry in Redis time. One Lua
script prunes expired leases, checks both caps and takes the slot atomically, so 50
simultaneous connects on any number of processes let exactly the cap in. The same
script renews a lease (heartbeat); closing a socket removes it at once; a crashed
process's leases expire by themselves within REALTIME_LEASE_SECONDS (<= 60).
"""

import asyncio
import enum
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import redis
import redis.asyncio.cluster as aiocluster
from django.conf import settings

from core.redis_clients import aredis_call, async_redis, key_slot, pipeline_eval
from core.redis_keys import atomic_script
from realtime import keys

logger = logging.getLogger(__name__)

# How long a new lease may wait for a replica's acknowledgement (Redis Cluster only).
LEASE_WAIT_MS = 500

_PRUNE_CHECK_ADD = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease_ms = tonumber(ARGV[4])
for i = 1, 3 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now_ms) end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 1 end
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 2 end
end
for i = 1, 3 do
  redis.call('ZADD', KEYS[i], now_ms + lease_ms, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], lease_ms)
end
return 0
"""


def _lease_keys(*, user_id: str, org_id: str) -> list[str]:
    """_PRUNE_CHECK_ADD's KEYS: the user's, the org's and everyone's leases."""
    return [keys.user_connections_key(user_id), keys.org_connections_key(org_id), keys.all_connections_key()]


atomic_script(
    "realtime.lease_take", _PRUNE_CHECK_ADD, keys=lambda s: _lease_keys(user_id=s.user_id, org_id=s.org_id)
)

_COUNT_LIVE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now_ms, '+inf')
"""
atomic_script("realtime.leases_live", _COUNT_LIVE, keys=lambda s: [keys.all_connections_key()])


# ARGV: the org's key, then user ids; returns the user ids holding a live lease on a
# socket of that org (a user holds at most MAX_CONNECTIONS_PER_USER leases: cheap).
_USERS_WITH_SOCKET = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local found = {}
for i = 1, #KEYS - 1 do
  local live = redis.call('ZRANGEBYSCORE', KEYS[i], '(' .. now_ms, '+inf')
  for _, connection in ipairs(live) do
    local expiry = redis.call('ZSCORE', KEYS[#KEYS], connection)
    if expiry and tonumber(expiry) > now_ms then
      table.insert(found, ARGV[i])
      break
    end
  end
end
return found
"""
atomic_script(
    "realtime.users_with_socket",
    _USERS_WITH_SOCKET,
    keys=lambda s: [
        keys.user_connections_key(s.user_id),
        keys.user_connections_key(s.other_user_id),
        keys.org_connections_key(s.org_id),
    ],
)


class SlotOutcome(enum.Enum):
    GRANTED = 0
    USER_LIMIT = 1
    ORG_LIMIT = 2


@dataclass(frozen=True)
class ConnectionSlot:
    connection_id: str
    user_id: str
    org_id: str

    @property
    def redis_keys(self) -> list[str]:
        return _lease_keys(user_id=self.user_id, org_id=self.org_id)


def _script_args(slot: ConnectionSlot) -> list[str | int]:
    lease_ms = int(settings.REALTIME_LEASE_SECONDS * 1000)
    return [slot.connection_id, settings.MAX_CONNECTIONS_PER_USER, settings.MAX_CONNECTIONS_PER_ORG, lease_ms]


async def slot_acquire(*, slot: ConnectionSlot) -> SlotOutcome:
    """Take (or renew, if already held) the slot's lease; raises redis errors.

    On a Redis Cluster a new lease counts only once a replica has it (WAIT 1, on the
    connection that wrote it): a master that dies right after cannot take a granted
    lease with it, so the promoted replica never lets an extra socket in. Not
    replicated in time: the lease is given back and the socket refused (1013, retry).
    A master that streams to no replica has no failover to lose a lease to: nothing
    to wait for (see _connected_replicas)."""
    client = async_redis()
    if not isinstance(client, aiocluster.RedisCluster):
        result = await aredis_call(
            lambda: client.eval(_PRUNE_CHECK_ADD, 3, *slot.redis_keys, *_script_args(slot))
        )
        return SlotOutcome(int(result))

    async def take_and_wait() -> tuple[int, int, int]:
        await client.initialize()
        master = client.nodes_manager.slots_cache[key_slot(slot.redis_keys[0])][0]
        wanted = min(await _connected_replicas(client, master), 1)
        async with client.pipeline(transaction=False) as pipe:  # one node: one connection
            pipeline_eval(pipe, _PRUNE_CHECK_ADD, slot.redis_keys, _script_args(slot))
            pipe.execute_command("WAIT", wanted, LEASE_WAIT_MS, target_nodes=master)
            result, acknowledged = await pipe.execute()
        return int(result), int(acknowledged), wanted

    result, acknowledged, wanted = await aredis_call(take_and_wait)
    outcome = SlotOutcome(result)
    if outcome is SlotOutcome.GRANTED and acknowledged < wanted:
        await slot_release(slot=slot)
        raise redis.ConnectionError("connection lease not replicated in time")
    return outcome


_replica_counts: dict[str, tuple[int, float]] = {}  # master name -> (replicas, read at)


async def _connected_replicas(client: aiocluster.RedisCluster, master: aiocluster.ClusterNode) -> int:
    """How many replicas the master streams to now (ROLE, read at most once a second):
    the cluster's slot map is no guide (it leaves out replicas that have not reported a
    replication offset yet). A master with none (its replica died and it noticed, after
    repl-timeout) has no failover to lose a lease to: nothing to wait for."""
    count, read_at = _replica_counts.get(master.name, (0, -1.0))
    if time.monotonic() - read_at > 1.0:
        role = await client.execute_command("ROLE", target_nodes=master)
        count = len(role[2]) if role and role[0] == "master" else 0
        _replica_counts[master.name] = (count, time.monotonic())
    return count


class LeaseRenewer:
    """Renews every lease of this process in one pipeline per heartbeat, so 1000 open
    sockets cost one round trip every REALTIME_HEARTBEAT_SECONDS, not 1000. A lease
    that lapsed (the process stalled past it) and whose slot was taken meanwhile is
    reported to its socket, which closes with 4429/4430."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[ConnectionSlot, Callable[[SlotOutcome], None]]] = {}
        self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, slot: ConnectionSlot, on_lost: Callable[[SlotOutcome], None]) -> None:
        self._held[slot.connection_id] = (slot, on_lost)

    def discard(self, slot: ConnectionSlot) -> None:
        self._held.pop(slot.connection_id, None)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(settings.REALTIME_HEARTBEAT_SECONDS)
            try:
                await self.renew_all()
            except (redis.RedisError, OSError) as error:  # retried next beat; leases outlive one miss
                logger.warning("realtime lease renewal failed: %s", error)

    async def renew_all(self) -> None:
        held = list(self._held.values())
        if not held:
            return
        client = async_redis()

        async def renew() -> list:
            # EVAL, not EVALSHA: a promoted cluster replica has no loaded scripts, and
            # Redis caches the text's compiled form anyway.
            async with client.pipeline(transaction=False) as pipe:
                for slot, _ in held:
                    pipeline_eval(pipe, _PRUNE_CHECK_ADD, slot.redis_keys, _script_args(slot))
                return await pipe.execute()

        results = await aredis_call(renew)
        for (slot, on_lost), result in zip(held, results, strict=True):
            outcome = SlotOutcome(int(result))
            if outcome is not SlotOutcome.GRANTED and slot.connection_id in self._held:
                self.discard(slot)
                on_lost(outcome)


_renewers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LeaseRenewer]" = weakref.WeakKeyDictionary()


def lease_renewer() -> LeaseRenewer:
    """The renewer of the running event loop (one per server process)."""
    loop = asyncio.get_running_loop()
    renewer = _renewers.get(loop)
    if renewer is None:
        renewer = _renewers[loop] = LeaseRenewer()
    return renewer


async def slot_release(*, slot: ConnectionSlot) -> None:
    client = async_redis()

    async def release() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for key in slot.redis_keys:
                pipe.zrem(key, slot.connection_id)
            await pipe.execute()

    await aredis_call(release)


def live_connections_count() -> int:
    """Open sockets across all server processes (sync: for the metrics view)."""
    from core.redis_clients import redis_call, sync_redis

    client = sync_redis()
    return int(redis_call(lambda: client.eval(_COUNT_LIVE, 1, keys.all_connections_key())))


def users_with_open_socket(*, org_id: str, user_ids: list[str]) -> set[str]:
    """Which of these users hold an open socket for the org, on any server process
    (sync: push delivery asks before a silent sync poke). Raises redis errors."""
    return {user for _, user in open_sockets_of({org_id: user_ids})}


def open_sockets_of(users_by_org: dict[str, list[str]]) -> set[tuple[str, str]]:
    """(org, user) for each of the users holding an open socket for that org: one
    pipeline for every org (the push fan-out asks for a whole batch of changes). Raises
    redis errors."""
    from core.redis_clients import redis_call, sync_redis

    asked = [(org_id, user_ids) for org_id, user_ids in users_by_org.items() if user_ids]
    if not asked:
        return set()
    client = sync_redis()

    def run() -> list[list[str]]:
        pipe = client.pipeline(transaction=False)
        for org_id, user_ids in asked:
            user_keys = [keys.user_connections_key(user_id) for user_id in user_ids]
            pipeline_eval(pipe, _USERS_WITH_SOCKET, [*user_keys, keys.org_connections_key(org_id)], user_ids)
        return pipe.execute(raise_on_error=True)

    found = redis_call(run)
    return {(org_id, str(user)) for (org_id, _), users in zip(asked, found, strict=True) for user in users}


def limit_reason(outcome: SlotOutcome) -> tuple[int, str, str]:
    """(close code, rejection label, close reason) for a refused slot."""
    if outcome is SlotOutcome.USER_LIMIT:
        limit = settings.MAX_CONNECTIONS_PER_USER
        return 4429, "user_limit", f"User connection limit reached (MAX_CONNECTIONS_PER_USER={limit})"
    limit = settings.MAX_CONNECTIONS_PER_ORG
    return 4430, "org_limit", f"Organization connection limit reached (MAX_CONNECTIONS_PER_ORG={limit})"
