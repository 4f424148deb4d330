"""Access changes at the edge: drop the user's cached auth preflight answers.

Registered as an access-change handler (edgecache/apps.py). Runs right after the
change commits and before its response, like a write's purge; a purge the CDN could
not take goes to the durable retry queue (edgecache/purge.py).
"""

from accounts.access_changes import (
    TOPIC_MEMBERSHIP_REMOVED,
    TOPIC_MEMBERSHIP_ROLE_CHANGED,
    TOPIC_TOKENS_REVOKED,
    AccessChange,
)
from edgecache.purge import purge_now
from edgecache.tags import user_access_tag

_TOPICS = frozenset({TOPIC_TOKENS_REVOKED, TOPIC_MEMBERSHIP_REMOVED, TOPIC_MEMBERSHIP_ROLE_CHANGED})


def edge_access_purge(change: AccessChange) -> None:
    if change.topic in _TOPICS:
        purge_now([user_access_tag(change.user_id)])
