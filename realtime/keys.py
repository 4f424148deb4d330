"""Redis key and channel names for realtime, in one place, each with its hash tag
(registered in core/redis_keys.py; docs/redis.md has the table).

- Connection caps: the limiter's one Lua script touches a user's set, an org's set and
  the global set together, and a user's cap spans orgs, so the three share one tag,
  `{rt-limits}`: exact caps on Redis Cluster too, at the price that all lease sets live
  on one cluster node (docs/redis.md says why that is enough, and what is next).
- Events: an org's stream, live channel and last version share the org's tag, so the
  publish script runs on the org's shard and orgs spread across the cluster.
- Stats: one global hash, `{rt-stats}`, only ever touched alone.
- Access announcements: one shard channel every realtime process listens to.
"""

from core.redis_keys import key_pattern

LIMITS_TAG = "{rt-limits}"
STATS_KEY = "{rt-stats}:counters"


def user_connections_key(user_id: str) -> str:
    return f"{LIMITS_TAG}:user:{user_id}"


def org_connections_key(org_id: str) -> str:
    return f"{LIMITS_TAG}:org:{org_id}"


def all_connections_key() -> str:
    return f"{LIMITS_TAG}:all"


def org_stream_key(org_id: str) -> str:
    return f"rt:events:{{{org_id}}}"


def org_channel(org_id: str) -> str:
    return f"rt:live:{{{org_id}}}"


# Access changes (token revoked, member removed) for every realtime process: one
# channel, since a process must hear of any user's revocation (realtime/access.py).
ACCESS_CHANNEL = "rt:access:{rt-access}"


def org_version_key(org_id: str) -> str:
    """The org's last published change version (same hash tag as its stream)."""
    return f"rt:version:{{{org_id}}}"


_LIMITS = "global: rt-limits (one script checks user, org and global caps together)"
key_pattern("realtime.user_leases", pattern="{rt-limits}:user:<user id>", hash_tag=_LIMITS,
            sample=lambda s: user_connections_key(s.user_id))  # fmt: skip
key_pattern("realtime.org_leases", pattern="{rt-limits}:org:<org id>", hash_tag=_LIMITS,
            sample=lambda s: org_connections_key(s.org_id))  # fmt: skip
key_pattern("realtime.all_leases", pattern="{rt-limits}:all", hash_tag=_LIMITS,
            sample=lambda s: all_connections_key())  # fmt: skip
key_pattern("realtime.org_stream", pattern="rt:events:{<org id>}", hash_tag="org",
            sample=lambda s: org_stream_key(s.org_id))  # fmt: skip
key_pattern("realtime.org_channel", pattern="rt:live:{<org id>} (shard channel)", hash_tag="org",
            sample=lambda s: org_channel(s.org_id))  # fmt: skip
key_pattern("realtime.org_version", pattern="rt:version:{<org id>}", hash_tag="org",
            sample=lambda s: org_version_key(s.org_id))  # fmt: skip
key_pattern("realtime.stats", pattern="{rt-stats}:counters", hash_tag="global: rt-stats (touched alone)",
            sample=lambda s: STATS_KEY)  # fmt: skip
key_pattern("realtime.access_channel", pattern="rt:access:{rt-access} (shard channel)",
            hash_tag="global: rt-access (one channel)", sample=lambda s: ACCESS_CHANNEL)  # fmt: skip
