"""The change log's outbox as tests see it."""

from typing import Any

from changelog.models import OutboxEntry
from tests.replica_support import wait_until


def finished_outbox_rows(org_id: Any, *, using: str = "default") -> list[OutboxEntry]:
    """The org's outbox rows once this process has finished those its request threads
    delivered: changelog.finishing deletes them, or hands them to the worker, in batches
    within CHANGELOG_FINISH_DELAY_SECONDS. Every row left is then the worker's (handed
    over) or failed. Waits up to 5 s: a loaded machine can delay the finisher thread (its
    first connection to a second cluster, say) past the grace period, which costs a
    redelivery, never a loss; the bound itself is CHANGELOG_FINISH_DELAY_SECONDS's."""

    def settled() -> tuple[list[OutboxEntry]] | None:
        rows = list(OutboxEntry.objects.using(using).filter(org_id=org_id).order_by("id"))
        return (rows,) if all(row.inline_done or row.attempts for row in rows) else None

    found = wait_until(settled, timeout=5)
    assert isinstance(found, tuple)
    return found[0]
