"""Redis key and channel names for realtime, in one place.

The connection-limit keys share one hash tag, so the limiter's single Lua script may
touch a user's set, an org's set and the global set on Redis Cluster too (the price:
all limit keys live on one cluster node; see docs/realtime.md). Event streams are
tagged by org, so orgs spread across nodes.
"""

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
ACCESS_CHANNEL = "rt:access"


def org_version_key(org_id: str) -> str:
    """The org's last published change version (same hash tag as its stream)."""
    return f"rt:version:{{{org_id}}}"
