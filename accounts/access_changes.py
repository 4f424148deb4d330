"""Access changes (a token revoked, a member removed or demoted) and who reacts to them.

Domain services call `access_change_record(...)` inside the write's transaction;
infrastructure (edge cache, realtime) registers a handler in its AppConfig.ready().
Handlers run right after commit, before the response, so REST, the edge and open
sockets all reflect the change within the contract's second. A handler must be
idempotent and must not raise into the request (it logs instead).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)

TOPIC_MEMBERSHIP_REMOVED = "membership.removed"
TOPIC_MEMBERSHIP_ROLE_CHANGED = "membership.role_changed"
TOPIC_TOKENS_REVOKED = "tokens.revoked"


@dataclass(frozen=True)
class AccessChange:
    topic: str
    user_id: str
    org_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


_handlers: dict[str, Callable[[AccessChange], None]] = {}


def register_access_handler(name: str, handler: Callable[[AccessChange], None]) -> None:
    _handlers[name] = handler


def access_change_record(*, org_id: Any, user_id: Any, topic: str, data: dict[str, Any]) -> None:
    change = AccessChange(
        topic=topic, user_id=str(user_id), org_id=None if org_id is None else str(org_id), data=data
    )
    transaction.on_commit(lambda: access_change_dispatch(change))


def access_change_dispatch(change: AccessChange) -> None:
    for name, handler in list(_handlers.items()):
        try:
            handler(change)
        except Exception:
            logger.exception("access change handler %s failed for %s", name, change.topic)
