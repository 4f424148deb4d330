"""What domain services call to record a change, inside the write's transaction.

    version = org_version_take(org_id=org.id)   # first statement of the write: lock order
    entry = Expense.objects.create(..., version=version)
    change_record(org_id=org.id, version=version, topic="expense.created",
                  entity_id=entry.id, data=entry_output(entry))

`org_version_take` bumps the org's counter row and keeps it locked until commit, so two
writers of one org commit in version order: a reader of the log never finds version
n+1 committed while n is still to come. `change_record` appends the outbox row in the
same transaction and, once the transaction commits, delivers it on this thread
(changelog.delivery). A rollback leaves no version, no row and no effect.

A service that commits many changes in one request (a sync push: a transaction per
mutation) runs them inside `changelog.delivery.delivery_batch()`: their after-write handlers then run once
for all of them when the block ends, before the response (changelog.delivery).

Access changes (a membership removed or demoted, tokens revoked) are not part of the
org's data and take no version; `access_change_record` sends them through the same
outbox, so revocation survives a crash too.
"""

import json
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NoReturn

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, router, transaction

from changelog.delivery import deliver_after_commit
from changelog.dispatch import Change
from changelog.models import OrgChangeCounter, OutboxEntry
from directory.exceptions import MOVED_EPOCH, OrgMoving

# No row comes back when the org has moved to another cluster (its epoch here says so)
# or when it has no counter row yet (an org made before the change log, or by a fixture).
# The second column says whether the org is quiet (no deferred handler has work for it):
# read under the row lock the UPDATE takes, so it holds until this transaction ends.
# A create runs the same UPDATE as its statement's first CTE (PreparedChange.version_take).
_TAKE_VERSION = f"""
UPDATE org_changes SET version = version + 1 WHERE org_id = %s AND epoch <> '{MOVED_EPOCH}'
RETURNING version, coalesce(quiet_until > now(), false) AS quiet
"""
_TAKE_FIRST_VERSION = f"""
INSERT INTO org_changes (org_id, version, epoch, pruned_through) VALUES (%s, 1, '1', 0)
ON CONFLICT (org_id) DO UPDATE SET version = org_changes.version + 1
WHERE org_changes.epoch <> '{MOVED_EPOCH}'
RETURNING version, quiet_until > now()
"""

_OUTBOX_INTO = """
INSERT INTO changelog_outbox
    (org_id, version, topic, entity_id, user_id, data, created_at, available_at, inline_done, attempts, state,
     last_error)
"""
_OUTBOX_INSERT = (
    _OUTBOX_INTO
    + """VALUES (%(org_id)s, %(version)s, %(topic)s, %(entity_id)s, %(user_id)s, %(data)s, %(created_at)s,
        %(created_at)s + make_interval(secs => %(grace)s), false, 0, 'pending', '')
RETURNING id
"""
)
# A deletion: the outbox row and the entity's tombstone, in one round trip. (Every
# other change uses the plain insert: a data-modifying CTE costs its planning even when
# its WHERE is false.)
_RECORD_DELETION = (
    """
WITH tombstone AS (
    INSERT INTO changelog_tombstone (org_id, entity, entity_id, version, deleted_at)
    VALUES (%(org_id)s, %(entity)s, %(entity_id)s, %(version)s, %(created_at)s)
    ON CONFLICT (org_id, entity_id) DO UPDATE SET version = EXCLUDED.version, deleted_at = EXCLUDED.deleted_at
)"""
    + _OUTBOX_INSERT
)


def _database() -> str:
    """The org's primary: the router knows the current org's cluster."""
    return router.db_for_write(OutboxEntry)


def org_transaction(*, savepoint: bool = True) -> transaction.Atomic:
    """The write's transaction, on the current org's primary (its cluster's, not
    necessarily `default`): what every org write runs in. Inside a caller's transaction
    it is a savepoint, unless `savepoint=False`: for a caller whose transaction fails as
    a whole when this block fails (it saves the SAVEPOINT and RELEASE round trips)."""
    return transaction.atomic(using=_database(), savepoint=savepoint)


# The last version this thread took while its org was quiet: (database, org, version).
# `change_record` for that same version (in the same transaction: the version is the
# org's lock) lets its change skip the deferred handlers.
_quiet_take = threading.local()


def org_version_take(*, org_id: uuid.UUID | str) -> int:
    """The org's next version, its counter row locked until this transaction ends.

    Call it first in the write's transaction, before locking any of the org's rows:
    every writer takes the org's locks in the same order, so none deadlocks.
    """
    database = _database()
    connection = connections[database]
    if not connection.in_atomic_block:
        raise RuntimeError("org_version_take must run inside the write's transaction (transaction.atomic)")
    with connection.cursor() as cursor:
        cursor.execute(_TAKE_VERSION, [str(org_id)])
        row = cursor.fetchone()
        if row is None:
            cursor.execute(_TAKE_FIRST_VERSION, [str(org_id)])
            row = cursor.fetchone()
    if row is None:
        _refuse_moved(org_id)
    version = int(row[0])
    _quiet_take.key = (database, str(org_id), version) if row[1] else None
    return version


def _taken_while_quiet(database: str, org_id: str | None, version: int | None) -> bool:
    return version is not None and getattr(_quiet_take, "key", None) == (database, org_id, version)


_QUIET_END = """
UPDATE org_changes SET quiet_until = NULL WHERE org_id IN (
    SELECT org_id FROM org_changes WHERE org_id = ANY(%s::uuid[]) ORDER BY org_id FOR NO KEY UPDATE)
"""


def org_quiet_end(*, org_ids: Iterable[uuid.UUID | str], using: str | None = None) -> None:
    """A deferred handler may have work for these orgs from this transaction's commit on
    (a member added, a device registered, preferences changed): end their quiet period.

    Call it in the transaction that makes the change. The UPDATE is unconditional (not
    `WHERE quiet_until IS NOT NULL`): it waits for the row lock of a worker that is
    marking the org quiet right now and then clears what that worker set; and a worker
    that locks the row after this commits sees the change (docs/changelog.md)."""
    ids = sorted({str(org_id) for org_id in org_ids})
    if not ids:
        return
    connection = connections[using or _database()]
    if not connection.in_atomic_block:
        raise RuntimeError("org_quiet_end must run inside the change's transaction (transaction.atomic)")
    with connection.cursor() as cursor:
        cursor.execute(_QUIET_END, [ids])


def member_changes_lock(*, user_id: uuid.UUID | str, using: str | None = None) -> None:
    """Serialize, per user and database, the transactions that change which of the
    user's orgs a deferred handler could have work for: adding a membership and
    registering a device. Without it, a device registration that does not yet see a
    membership being added (so does not end that org's quiet period) and the membership
    (whose transaction cannot see the uncommitted device) could both commit while a
    worker marks the org quiet in between. Take it before reading or adding the
    memberships; held until the transaction ends."""
    connection = connections[using or _database()]
    if not connection.in_atomic_block:
        raise RuntimeError(
            "member_changes_lock must run inside the change's transaction (transaction.atomic)"
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('changelog-member:' || %s, 0))", [str(user_id)]
        )


def _refuse_moved(org_id: uuid.UUID | str) -> NoReturn:
    """This cluster's copy of the org was left by a move: route again, retry later."""
    from directory.cache import directory_cache

    directory_cache.forget(str(org_id))
    raise OrgMoving()


_LOCK_COUNTER = "SELECT epoch FROM org_changes WHERE org_id = %s FOR NO KEY UPDATE"
_ADD_COUNTER = (
    "INSERT INTO org_changes (org_id, version, epoch, pruned_through) VALUES (%s, 0, '1', 0) "
    "ON CONFLICT (org_id) DO NOTHING"
)


def org_lock_take(*, org_id: uuid.UUID | str) -> None:
    """The org's counter row locked until this transaction ends, without taking a version.

    For a transaction that decides only after reading its own rows whether it writes
    (a sync push checks its client's mutation id first), or that must rewrite the org's
    derived data while no write is half done (a read-model repair): it takes the org's
    lock in the same order as every writer, and a later `org_version_take` in it only bumps the row
    it already holds. Orgs made before the change log get their counter row here.
    """
    database = _database()
    connection = connections[database]
    if not connection.in_atomic_block:
        raise RuntimeError("org_lock_take must run inside the write's transaction (transaction.atomic)")
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_COUNTER, [str(org_id)])
        row = cursor.fetchone()
        if row is None:
            cursor.execute(_ADD_COUNTER, [str(org_id)])
            cursor.execute(_LOCK_COUNTER, [str(org_id)])
            row = cursor.fetchone()
    if row[0] == MOVED_EPOCH:
        _refuse_moved(org_id)


def org_counter_create(*, org_id: uuid.UUID | str) -> None:
    """The new org's counter row, at version 0 (in the org's creation transaction)."""
    OrgChangeCounter.objects.using(_database()).get_or_create(org_id=org_id)


def change_record(
    *,
    org_id: uuid.UUID | str,
    version: int,
    topic: str,
    entity_id: uuid.UUID | str,
    data: dict[str, Any],
) -> None:
    """Record a versioned change of one of the org's entities (`<entity>.<action>`).

    A `*.deleted` topic also leaves the entity's tombstone for offline clients.
    """
    _record(
        org_id=str(org_id),
        version=version,
        topic=topic,
        entity_id=str(entity_id),
        user_id=None,
        data=data,
        tombstone=topic.endswith(".deleted"),
    )


def access_change_record(
    *,
    org_id: uuid.UUID | str | None,
    user_id: uuid.UUID | str,
    topic: str,
    data: dict[str, Any] | None = None,
) -> None:
    """Record a change of who may see what (`membership.removed`, `tokens.revoked`, ...)."""
    _record(
        org_id=None if org_id is None else str(org_id),
        version=None,
        topic=topic,
        entity_id=None,
        user_id=str(user_id),
        data=data or {},
        tombstone=False,
    )


def _record(
    *,
    org_id: str | None,
    version: int | None,
    topic: str,
    entity_id: str | None,
    user_id: str | None,
    data: dict[str, Any],
    tombstone: bool,
) -> None:
    database, params, change = _prepare(
        org_id=org_id, version=version, topic=topic, entity_id=entity_id, user_id=user_id, data=data
    )
    with connections[database].cursor() as cursor:
        cursor.execute(_RECORD_DELETION if tombstone else _OUTBOX_INSERT, params)
        outbox_id = int(cursor.fetchone()[0])
    _deliver_on_commit(replace(change, outbox_id=outbox_id))


def _deliver_on_commit(change: Change) -> None:
    transaction.on_commit(lambda: deliver_after_commit(change), using=change.database)


_OUTBOX_INSERT_FROM = (
    _OUTBOX_INTO
    + """SELECT %s, {source}.version, %s, %s, NULL, jsonb_set(%s::jsonb, '{{version}}', to_jsonb({source}.version)),
       %s, %s::timestamptz + make_interval(secs => %s), false, 0, 'pending', ''
FROM {source}
RETURNING id, version, (SELECT quiet FROM {taken})
"""
)
_OUTBOX_INSERT_FROM_PARAMS = ("org_id", "topic", "entity_id", "data", "created_at", "created_at", "grace")


@dataclass(frozen=True)
class PreparedChange:
    """A change that the caller's own statement versions and records (one round trip
    for the whole write): its first CTE takes the org's version
    (`version_take`), its entity's INSERT stamps it, and its last part writes the
    outbox row (`outbox_insert`); then `recorded` with what that statement returned."""

    database: str
    params: dict[str, Any]
    change: Change

    def version_take(self) -> tuple[str, list[Any]]:
        """The CTE body that takes the org's next version, locking its counter row (the
        write's first lock, as `org_version_take`); it returns `version` and `quiet`. No
        row when the org moved away or has no counter row: then lock the org
        (`org_lock_take`, which refuses a moved org and adds a missing row) and run the
        statement again. A statement that then writes nothing must fail its transaction
        (or savepoint): the version it took is given back by the rollback."""
        return _TAKE_VERSION, [self.params["org_id"]]

    def outbox_insert(self, *, source: str, taken: str) -> tuple[str, list[Any]]:
        """SQL that inserts the outbox row once per row of the CTE `source` (so none when
        the entity's own INSERT inserted nothing), with `source.version` (also put into
        the change's data), returning its id, version and the org's quiet flag from the
        version CTE `taken`; and its parameters."""
        sql = _OUTBOX_INSERT_FROM.format(source=source, taken=taken)
        return sql, [self.params[name] for name in _OUTBOX_INSERT_FROM_PARAMS]

    def recorded(self, *, outbox_id: int, version: int, quiet: bool) -> None:
        """The row is written (in this transaction): deliver the change after commit."""
        self.change.data["version"] = version
        _deliver_on_commit(replace(self.change, outbox_id=outbox_id, version=version, quiet=quiet))


def change_prepare(
    *,
    org_id: uuid.UUID | str,
    topic: str,
    entity_id: uuid.UUID | str,
    data: dict[str, Any],
) -> PreparedChange:
    """`org_version_take` and `change_record` for a caller that does both in its own
    statement (PreparedChange). `data` gets the version once it is known. Not for
    deletions (their tombstone: change_record)."""
    if topic.endswith(".deleted"):
        raise ValueError("a deletion leaves a tombstone: use change_record")
    database, params, change = _prepare(
        org_id=str(org_id), version=None, topic=topic, entity_id=str(entity_id), user_id=None, data=data
    )
    return PreparedChange(database=database, params=params, change=change)


def _prepare(
    *,
    org_id: str | None,
    version: int | None,
    topic: str,
    entity_id: str | None,
    user_id: str | None,
    data: dict[str, Any],
) -> tuple[str, dict[str, Any], Change]:
    from django.conf import settings

    database = _database()
    if not connections[database].in_atomic_block:
        raise RuntimeError("change_record must run inside the write's transaction (transaction.atomic)")
    committed_at = time.time()
    params = {
        "org_id": org_id,
        "version": version,
        "topic": topic,
        "entity": topic.partition(".")[0],
        "entity_id": entity_id,
        "user_id": user_id,
        "data": json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":")),
        "created_at": datetime.fromtimestamp(committed_at, tz=UTC),
        "grace": settings.CHANGELOG_WORKER_GRACE_SECONDS,
    }
    change = Change(
        outbox_id=0,
        org_id=org_id,
        version=version,
        topic=topic,
        entity_id=entity_id,
        user_id=user_id,
        data=data,
        committed_at=committed_at,
        database=database,
        quiet=_taken_while_quiet(database, org_id, version),
    )
    return database, params, change
