import time
from typing import Any

from django.apps import AppConfig

# The realtime publish before the change log: every event appended and announced, in
# whatever order the request threads get there (no last-version check). Same keys and
# arguments as realtime.publishing's ordered script.
_PUBLISH_UNORDERED = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'b', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call(ARGV[9], KEYS[2], ARGV[4] .. ' {"event_id":"' .. id .. '",' .. string.sub(ARGV[1], 2) .. '\\n' .. ARGV[8])
return id
"""


class ChangelogBypassConfig(AppConfig):
    """The write path before the change log: no counter row, no outbox row (a create's
    entry + totals statement ends with a plain SELECT instead of the outbox INSERT), the
    same after-commit handlers, except that realtime publishes every event as it did
    before versions existed (with no version to order by, the ordered script would drop
    every event after an org's first as a duplicate: a cheaper baseline than the real
    one was)."""

    name = "bench.changelog_bypass"
    label = "bench_changelog_bypass"

    def ready(self) -> None:
        from django.db import router, transaction

        import finance.services
        import tenancy.services
        from changelog.dispatch import Change, handlers, register_handler, run_handlers
        from changelog.models import OutboxEntry
        from core.redis_clients import pipeline_eval, redis_call, sync_redis
        from realtime import keys
        from realtime.publishing import OutgoingEvent

        def publish_unordered(change: Change) -> None:
            event = OutgoingEvent.of(change)
            if event is None:
                return
            client = sync_redis()

            def publish_and_count() -> list[Any]:
                pipe = client.pipeline(transaction=False)
                pipeline_eval(pipe, _PUBLISH_UNORDERED, event.script_keys(), event.script_args())
                pipe.hincrby(keys.STATS_KEY, "events_published", 1)
                return pipe.execute()

            redis_call(publish_and_count)

        register_handler("realtime_event", publish_unordered, inline=True, order=30)

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
