"""Per-decision logging of read/write routing (LOG_PARTITION_ROUTING=true).

The database router calls `log_routing_decision` for each decision. It is a no-op
unless the setting is on (read on every call, so tests and operators can flip it),
and it logs ids only to the log stream, never to metric labels.
"""

import logging

from django.conf import settings

logger = logging.getLogger("routing")


def log_routing_decision(
    *,
    alias: str,
    reason: str,
    model: str | None = None,
    org_id: object | None = None,
    write: bool = False,
) -> None:
    """Log one routing decision: which alias serves it, why, for which model and org."""
    if not settings.LOG_PARTITION_ROUTING:
        return
    logger.info(
        "routing decision",
        extra={
            "db_alias": alias,
            "reason": reason,
            "model": model,
            "org_id": None if org_id is None else str(org_id),
            "operation": "write" if write else "read",
        },
    )
