"""The one after-write path: handlers that infrastructure registers, run for each change.

Domain services record changes (changelog.services); they never call infrastructure.
Infrastructure apps register handlers in their AppConfig.ready():

    register_handler("edge_purge", purge_for_change, inline=True, order=20)

- inline handlers run on the request's own thread right after commit, by `order`
  (replica position 10, edge purge 20, realtime 30), before the response leaves (the edge purge must precede the response); the
  outbox worker re-runs them for a change whose process died first.
- deferred handlers (`inline=False`) run only in the outbox worker, never on the
  request path (push notifications).

A handler may also register a `batch` form, called with several changes in commit order
instead of once per change: those of one request (a sync push of 100 mutations: one
purge of the union of the tags, one Redis round trip for the events;
changelog.delivery), or a claim of the outbox worker (changes of many orgs of one
database: the push fan-out's statements per claim, not per change; changelog.worker).

Every handler must be idempotent: a change may be delivered twice (a worker that died
after its handlers ran, a request thread racing the worker). A handler raises to have
the change retried with backoff; it ignores topics it has no business with.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from changelog.metrics import HANDLER_OUTCOMES, changelog_handler_runs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """One committed change, as handlers see it."""

    outbox_id: int
    org_id: str | None  # None for a user-wide access change (tokens revoked)
    version: int | None  # the org's change number; None for access changes
    topic: str  # "expense.created", "property.updated", "membership.removed", ...
    entity_id: str | None
    user_id: str | None
    data: dict[str, Any] = field(default_factory=dict)
    committed_at: float = 0.0  # epoch seconds, when the change was recorded
    database: str = "default"  # alias of the org's primary (where the outbox row lives)
    # The org was quiet when the version was taken: no deferred handler has work for it.
    quiet: bool = False

    @property
    def entity(self) -> str:
        return self.topic.partition(".")[0]

    @property
    def action(self) -> str:
        return self.topic.partition(".")[2]


Handler = Callable[[Change], None]
BatchHandler = Callable[[list[Change]], None]
# (org ids, database) -> those of the orgs the handler may have work for.
WorkFor = Callable[[list[str], str], set[str]]


@dataclass(frozen=True)
class RegisteredHandler:
    name: str
    handler: Handler
    inline: bool
    order: int
    batch: BatchHandler | None = None
    work_for: WorkFor | None = None

    def orgs_with_work(self, org_ids: list[str], database: str) -> set[str]:
        """Those of `org_ids` this handler may have work for (all, if it cannot say)."""
        return set(org_ids) if self.work_for is None else self.work_for(org_ids, database)

    def run(self, changes: list[Change]) -> None:
        if self.batch is not None and len(changes) > 1:
            self.batch(changes)
        else:
            for change in changes:
                self.handler(change)


_handlers: list[RegisteredHandler] = []


def register_handler(
    name: str,
    handler: Handler,
    *,
    inline: bool = True,
    order: int = 100,
    batch: BatchHandler | None = None,
    work_for: WorkFor | None = None,
) -> None:
    """Add a handler (once per name; a second registration replaces the first).

    `batch`, if given, must have the same effect as calling `handler` for each change
    in order. `work_for` (deferred handlers): which of the given orgs the handler could
    have any work for, asked by the outbox worker under the orgs' counter locks; an org
    none of the deferred handlers has work for is marked quiet (docs/changelog.md).
    Whatever could give the handler work for an org must then end its quiet period in
    its own transaction (`changelog.services.org_quiet_end`)."""
    global _handlers  # noqa: PLW0603
    entry = RegisteredHandler(
        name=name, handler=handler, inline=inline, order=order, batch=batch, work_for=work_for
    )
    others = [h for h in _handlers if h.name != name]
    _handlers = sorted([*others, entry], key=lambda h: (h.order, h.name))


def handlers(*, inline: bool | None = None) -> list[RegisteredHandler]:
    return [h for h in _handlers if inline is None or h.inline is inline]


class HandlerFailed(Exception):
    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(f"{name}: {type(error).__name__}: {error}")
        self.name = name


def run_handlers(change: Change, selected: list[RegisteredHandler]) -> None:
    """Run `selected` in order; the first failure stops the rest and is raised."""
    run_handlers_batch([change], selected)


def run_handlers_batch(changes: list[Change], selected: list[RegisteredHandler]) -> None:
    """Run each of `selected`, in order, for all `changes` (in commit order); the first
    failure stops the rest and is raised. Which changes it concerns is not known: the
    caller delivers them again one by one."""
    for registered in selected:
        started = time.perf_counter()
        try:
            registered.run(changes)
        except Exception as error:
            changelog_handler_runs.labels(handler=registered.name, outcome=HANDLER_OUTCOMES.failed).inc()
            first = changes[0]
            logger.warning(
                "change handler %s failed for %s v%s of org %s (%d change(s)): %s",
                registered.name,
                first.topic,
                first.version,
                first.org_id,
                len(changes),
                error,
            )
            raise HandlerFailed(registered.name, error) from error
        changelog_handler_runs.labels(handler=registered.name, outcome=HANDLER_OUTCOMES.ok).inc(len(changes))
        logger.debug(
            "change handler %s took %.2f ms for %d change(s)",
            registered.name,
            (time.perf_counter() - started) * 1000,
            len(changes),
        )
