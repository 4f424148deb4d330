"""Topics of access changes (recorded with changelog.services.access_change_record):
who may see what changed, without a change to the org's data. Infrastructure reacts:
the edge drops the user's cached auth answers, realtime closes the user's sockets."""

TOPIC_MEMBERSHIP_REMOVED = "membership.removed"
TOPIC_MEMBERSHIP_ROLE_CHANGED = "membership.role_changed"
TOPIC_TOKENS_REVOKED = "tokens.revoked"

ACCESS_TOPICS = frozenset({TOPIC_MEMBERSHIP_REMOVED, TOPIC_MEMBERSHIP_ROLE_CHANGED, TOPIC_TOKENS_REVOKED})
