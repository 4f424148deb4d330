import time
from typing import Any

from django.apps import AppConfig


class ChangelogBypassConfig(AppConfig):
    """The write path before the change log: no counter row, no outbox row (a create's
    entry + totals statement ends with a plain SELECT instead of the outbox INSERT), the
    same after-commit handlers."""

    name = "bench.changelog_bypass"
    label = "bench_changelog_bypass"

    def ready(self) -> None:
        from django.db import router, transaction

        import finance.services
        import tenancy.services
        from changelog.dispatch import Change, handlers, run_handlers
        from changelog.models import OutboxEntry

        def version_without_counter(*, org_id: Any) -> int:
            return 0

        def change_of(*, org_id: Any, version: int, topic: str, entity_id: Any, data: dict) -> Change:
            return Change(
                outbox_id=0, org_id=str(org_id), version=version, topic=topic, entity_id=str(entity_id),
                user_id=None, data=data, committed_at=time.time(), database=router.db_for_write(OutboxEntry),
            )  # fmt: skip

        def deliver_on_commit(change: Change) -> None:
            transaction.on_commit(lambda: run_handlers(change, handlers(inline=True)))

        def record_without_outbox(**fields: Any) -> None:
            deliver_on_commit(change_of(**fields))

        class PreparedWithoutOutbox:
            """The create's one statement with no counter row (a constant version)
            and a plain SELECT in place of the outbox INSERT."""

            def __init__(self, change: Change) -> None:
                self.change = change

            def version_take(self) -> tuple[str, list[Any]]:
                return "SELECT 1::bigint AS version, false AS quiet", []

            def outbox_insert(self, *, source: str, taken: str) -> tuple[str, list[Any]]:
                return f"SELECT 0, 0::bigint, false FROM {source}", []

            def recorded(self, *, outbox_id: int, version: int, quiet: bool) -> None:
                deliver_on_commit(self.change)

        def prepare_without_outbox(**fields: Any) -> PreparedWithoutOutbox:
            return PreparedWithoutOutbox(change_of(version=0, **fields))

        for module in (finance.services, tenancy.services):
            module.org_version_take = version_without_counter  # type: ignore[attr-defined]
            module.change_record = record_without_outbox  # type: ignore[attr-defined]
        finance.services.change_prepare = prepare_without_outbox  # type: ignore[assignment]
