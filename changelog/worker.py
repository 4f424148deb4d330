"""The outbox worker: delivers what the request threads could not.

A row is due when its grace period (CHANGELOG_WORKER_GRACE_SECONDS after the change,
time for the request thread to deliver it itself) or its backoff has passed. Rows are
claimed with `FOR UPDATE SKIP LOCKED`, so any number of workers share the outbox, and
handled in id order, which within an org is version order (the counter lock makes an
org's outbox rows commit in version order). Each handler runs once for the whole claim
(its batch form: the push fan-out's statements do not grow with the claim), in a
savepoint; if that fails, the claim is rolled back to it and run row by row, so a
failing change holds up only its own org's later changes. A row whose handlers keep
failing is moved to the dead-letter state after CHANGELOG_MAX_ATTEMPTS; `manage.py
outbox_status --requeue-dead` gives it another round.

Before it commits a batch, the worker asks the deferred handlers whether they have any
work for the orgs it delivered changes of, and marks those none has work for quiet for
CHANGELOG_QUIET_SECONDS (docs/changelog.md "Quiet orgs"): their next changes are done
on the request thread and never come here.
"""

import json
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import OperationalError, connections, transaction
from django.db.backends.utils import CursorWrapper

from changelog.delivery import retry_delay
from changelog.dispatch import Change, HandlerFailed, handlers, run_handlers_batch
from changelog.maintenance import outbox_gauges_refresh, tombstones_prune
from changelog.metrics import (
    DELIVERY_PATHS,
    changelog_dead_letters,
    changelog_deliveries,
)
from changelog.periodic import periodic_run

logger = logging.getLogger(__name__)

_CLAIM = """
SELECT id, org_id, version, topic, entity_id, user_id, data, extract(epoch FROM created_at), inline_done, attempts
FROM changelog_outbox
WHERE state = 'pending' AND available_at <= clock_timestamp()
ORDER BY id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""


@dataclass
class DrainResult:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    quieted: int = 0  # orgs marked quiet

    @property
    def claimed(self) -> int:
        return self.delivered + self.failed + self.dead


@dataclass(frozen=True)
class _Claimed:
    change: Change
    inline_done: bool  # the request thread ran the inline handlers
    attempts: int


def _claimed(row: tuple, database: str) -> _Claimed:
    outbox_id, org_id, version, topic, entity_id, user_id, data, created, inline_done, attempts = row
    change = Change(
        outbox_id=outbox_id,
        org_id=None if org_id is None else str(org_id),
        version=version,
        topic=topic,
        entity_id=None if entity_id is None else str(entity_id),
        user_id=None if user_id is None else str(user_id),
        data=json.loads(data) if isinstance(data, str) else data,  # Django loads jsonb as text
        committed_at=float(created),
        database=database,
    )
    return _Claimed(change=change, inline_done=inline_done, attempts=attempts)


def drain_once(*, database: str = "default", batch_size: int = 100) -> DrainResult:
    """Claim up to `batch_size` due rows of one database and deliver them."""
    result = DrainResult()
    with transaction.atomic(using=database), connections[database].cursor() as cursor:
        cursor.execute(_CLAIM, [batch_size])
        claimed = [_claimed(row, database) for row in cursor.fetchall()]
        delivered, failed_orgs = _deliver(cursor, claimed, result)
        if delivered:
            cursor.execute(
                "DELETE FROM changelog_outbox WHERE id = ANY(%s)",
                [[row.change.outbox_id for row in delivered]],
            )
            changelog_deliveries.labels(path=DELIVERY_PATHS.worker).inc(len(delivered))
            result.delivered = len(delivered)
        delivered_orgs = {row.change.org_id for row in delivered if row.change.org_id is not None}
        result.quieted = quiet_mark(database=database, org_ids=sorted(delivered_orgs - failed_orgs))
    return result


def _deliver(
    cursor: CursorWrapper, claimed: list[_Claimed], result: DrainResult
) -> tuple[list[_Claimed], set[str]]:
    """Run the claimed rows' handlers: all rows at once (each handler once for the
    whole claim, its batch form if it has one), or, if that fails, row by row, since
    which change failed is unknown. Returns the rows delivered and the orgs of those
    that failed. A failed row is retried with backoff, or dead-lettered; the org's later
    rows wait for it (their order kept)."""
    if len(claimed) > 1:
        try:
            _run(claimed)
        except HandlerFailed:
            pass  # rolled back: each on its own below
        else:
            return claimed, set()
    delivered: list[_Claimed] = []
    failed_orgs: set[str] = set()
    waiting: list[int] = []
    for row in claimed:
        change = row.change
        if change.org_id is not None and change.org_id in failed_orgs and change.version is not None:
            waiting.append(change.outbox_id)  # an earlier change of this org failed
            continue
        try:
            _run([row])
        except HandlerFailed as failure:
            if change.org_id is not None:
                failed_orgs.add(change.org_id)
            _failure_record(cursor, row, failure, result)
            continue
        delivered.append(row)
    if waiting:
        cursor.execute(
            "UPDATE changelog_outbox SET available_at = clock_timestamp() + make_interval(secs => %s) "
            "WHERE id = ANY(%s)",
            [retry_delay(1), waiting],
        )
        result.failed += len(waiting)
    return delivered, failed_orgs


def _run(claimed: list[_Claimed]) -> None:
    """Every handler the rows still need, in handler order, each once for all of them
    (in id order); the inline ones only for rows whose request thread did not run them.
    In a savepoint: a failure leaves nothing of the attempt in the worker's
    transaction. Raises HandlerFailed."""
    with transaction.atomic(using=claimed[0].change.database):
        for registered in handlers():
            changes = [row.change for row in claimed if not (registered.inline and row.inline_done)]
            if changes:
                run_handlers_batch(changes, [registered])


def _failure_record(
    cursor: CursorWrapper, row: _Claimed, failure: HandlerFailed, result: DrainResult
) -> None:
    change = row.change
    if row.attempts + 1 >= settings.CHANGELOG_MAX_ATTEMPTS:
        cursor.execute(
            "UPDATE changelog_outbox SET state = 'dead', attempts = attempts + 1, last_error = %s WHERE id = %s",
            [str(failure)[:2000], change.outbox_id],
        )
        changelog_dead_letters.inc()
        logger.error(
            "change %s v%s of org %s dead-lettered: %s", change.topic, change.version, change.org_id, failure
        )
        result.dead += 1
    else:
        cursor.execute(
            "UPDATE changelog_outbox SET attempts = attempts + 1, last_error = %s, "
            "available_at = clock_timestamp() + make_interval(secs => %s) WHERE id = %s",
            [str(failure)[:2000], retry_delay(row.attempts + 1), change.outbox_id],
        )
        result.failed += 1


# The orgs' counter rows, locked in org order (as every multi-org locker does, so no
# deadlock), waiting at most _QUIET_LOCK_WAIT_MS for writers: a busy org's row is
# rarely free at any instant, and a hot org is the one that gains most.
_QUIET_LOCK_WAIT_MS = 250
_LOCK_FOR_QUIET = """
SELECT org_id FROM org_changes
WHERE org_id = ANY(%s::uuid[]) AND (quiet_until IS NULL OR quiet_until < clock_timestamp())
ORDER BY org_id
FOR NO KEY UPDATE
"""
_SET_QUIET = """
UPDATE org_changes SET quiet_until = clock_timestamp() + make_interval(secs => %s) WHERE org_id = ANY(%s::uuid[])
"""


# Orgs a handler had work for, not asked again before this (monotonic) time: an org with
# devices sends every change here, and its answer does not change by the batch.
_BUSY_ASK_AGAIN_SECONDS = 30.0
_busy_until: dict[tuple[str, str], float] = {}


def quiet_mark(*, database: str, org_ids: list[str]) -> int:
    """Mark quiet those of `org_ids` no deferred handler has work for; returns how many.

    Runs in the worker's transaction, which it commits next. The orgs' counter rows are
    locked first (waiting a moment for writers), and only then are the handlers asked
    (each statement of a READ COMMITTED transaction sees what committed before it
    began): a change that gives a handler work either committed before the lock (the
    handler sees it) or ends the quiet period after this commits (`org_quiet_end` waits
    for the row lock). A failure here only leaves the orgs as they were."""
    deferred = handlers(inline=False)
    now = time.monotonic()
    org_ids = [org for org in org_ids if _busy_until.get((database, org), 0.0) <= now]
    if not org_ids or not deferred or settings.CHANGELOG_QUIET_SECONDS <= 0:
        return 0
    if len(_busy_until) > 10_000:
        _busy_until.clear()
    try:
        with transaction.atomic(using=database), connections[database].cursor() as cursor:
            # Kept to the end of the worker's transaction, which only commits after this.
            cursor.execute(f"SET LOCAL lock_timeout = {_QUIET_LOCK_WAIT_MS}")
            cursor.execute(_LOCK_FOR_QUIET, [org_ids])
            locked = [str(row[0]) for row in cursor.fetchall()]
            quiet = locked
            for registered in deferred:
                if quiet:
                    busy = registered.orgs_with_work(quiet, database)
                    quiet = [org for org in quiet if org not in busy]
                    for org in busy:
                        _busy_until[(database, org)] = now + min(
                            _BUSY_ASK_AGAIN_SECONDS, settings.CHANGELOG_QUIET_SECONDS
                        )
            if quiet:
                cursor.execute(_SET_QUIET, [settings.CHANGELOG_QUIET_SECONDS, quiet])
    except OperationalError as error:  # lock_timeout: a writer held a row; next time
        logger.info("outbox worker: quiet orgs of %s not marked this time: %s", database, error)
        return 0
    except Exception:
        logger.exception("outbox worker: could not mark quiet orgs of %s", database)
        return 0
    return len(quiet)


def run_worker(
    *, databases: list[str], poll_seconds: float, batch_size: int = 100, stop_after: float | None = None
) -> None:
    """Drain every database until stopped; between empty rounds, sleep `poll_seconds`."""
    started = time.monotonic()
    next_maintenance = 0.0
    from changelog.shutdown import stop_requested

    while not stop_requested() and (stop_after is None or time.monotonic() - started < stop_after):
        busy = False
        for database in databases:
            try:
                result = drain_once(database=database, batch_size=batch_size)
            except Exception:  # a database away must not end the worker: retry next round
                logger.exception("outbox worker: draining %s failed", database)
                connections[database].close()
                continue
            busy = busy or result.claimed == batch_size
        if time.monotonic() >= next_maintenance:
            for database in databases:
                try:
                    outbox_gauges_refresh(database=database)
                    tombstones_prune(database=database)
                except Exception:
                    logger.exception("outbox worker: maintenance of %s failed", database)
            periodic_run()
            next_maintenance = time.monotonic() + settings.CHANGELOG_MAINTENANCE_SECONDS
        if not busy:
            time.sleep(poll_seconds)
