"""Periodic chores the outbox worker runs between deliveries, registered by the apps
that own them (as handlers are): the worker knows nothing of what they do.

    register_periodic("edge_purge_retry", purge_queue_retry)

Each runs once per maintenance round (CHANGELOG_MAINTENANCE_SECONDS); one that raises
is logged and tried again next round, never ending the worker.
"""

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

_chores: dict[str, Callable[[], object]] = {}


def register_periodic(name: str, chore: Callable[[], object]) -> None:
    _chores[name] = chore


def periodic_run() -> None:
    for name, chore in list(_chores.items()):
        try:
            chore()
        except Exception:
            logger.exception("outbox worker: periodic chore %s failed", name)
