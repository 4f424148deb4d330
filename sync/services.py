"""Push: apply a client's queued mutations exactly once, in order.

Mutations are applied in short transactions, each holding the org's lock for at most
SYNC_PUSH_TRANSACTION_MAX_MS (at least one mutation each):

    org_lock_take          the org's counter row (the lock order of every writer)
    lock the client row    (org_id, client_id): owner and last_mutation_id
    for each mutation, while the time allows:
      id <= last           already_applied: nothing written
      id >  last + 1       a gap: the push stops (409 with `expected`)
      id == last + 1       apply it in a savepoint (applied, or rejected and undone);
                           it takes its own version (org_version_take), last = id
    last_mutation_id = last, committed with the changes it counts

The client row's update commits with the changes it counts, so a retried, duplicated
or concurrent push can never apply a mutation twice, and a rejected mutation still
advances the id (it never blocks the queue). The time bound keeps the org's lock about
as short as a few REST writes: a whole batch of 100 in one transaction would hold up
every other writer of the org for its whole run, one transaction per mutation pays a
commit, the org and client locks and the id update for each. The changes' after-commit
handlers (replica position, edge purge, realtime event and poke, notifications) run as
for any REST write, since the mutations go through the finance services; for the whole
batch at once (changelog.delivery.delivery_batch): one purge, one Redis round trip for
the events in version order, one statement for the outbox rows, before the response.

Ids at or below the last one seen before any lock are skipped without one: the last
id only ever grows.
"""

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connections, router, transaction

from accounts.models import User
from changelog.delivery import delivery_batch
from changelog.services import org_lock_take
from sync.models import SyncClient
from sync.mutations import Mutation, Rejected, mutation_apply
from tenancy.models import Organization
from tenancy.roles import Role, role_allows

APPLIED, ALREADY_APPLIED, REJECTED = "applied", "already_applied", "rejected"


class ClientOfAnotherUser(Exception):
    """The client id was first pushed by another user."""


@dataclass(frozen=True)
class MutationResult:
    id: int
    status: str
    error: dict[str, Any] | None = None
    version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.error is not None:
            out["error"] = self.error
        if self.version is not None:
            out["version"] = self.version
        return out


@dataclass
class PushOutcome:
    results: list[MutationResult] = field(default_factory=list)
    last_mutation_id: int = 0
    expected: int | None = None  # set when a gap stopped the push


_PEEK = "SELECT user_id, last_mutation_id FROM sync_client WHERE org_id = %s AND client_id = %s"
_LOCK = """
SELECT c.user_id, c.last_mutation_id, m.role
FROM sync_client c LEFT JOIN tenancy_membership m ON m.org_id = c.org_id AND m.user_id = %(user)s
WHERE c.org_id = %(org)s AND c.client_id = %(client)s
FOR UPDATE OF c
"""
_ADD = """
INSERT INTO sync_client (org_id, client_id, user_id, last_mutation_id, created_at, updated_at)
VALUES (%(org)s, %(client)s, %(user)s, 0, clock_timestamp(), clock_timestamp())
ON CONFLICT (org_id, client_id) DO NOTHING
"""
_ADVANCE = """
UPDATE sync_client SET last_mutation_id = %(id)s, updated_at = clock_timestamp()
WHERE org_id = %(org)s AND client_id = %(client)s
"""


def _database() -> str:
    return router.db_for_write(SyncClient)


def sync_client_peek(*, org_id: uuid.UUID, client_id: uuid.UUID, user: User) -> int:
    """The client's last mutation id (0 for a new client), without a lock. Raises
    ClientOfAnotherUser."""
    with connections[_database()].cursor() as cursor:
        cursor.execute(_PEEK, [org_id, client_id])
        row = cursor.fetchone()
    if row is None:
        return 0
    if row[0] != user.pk:
        raise ClientOfAnotherUser(str(client_id))
    return int(row[1])


def _client_lock(*, org_id: uuid.UUID, client_id: uuid.UUID, user: User) -> tuple[int, str | None]:
    """Lock the client's row (made if new): its last mutation id, and the user's role now."""
    params = {"org": org_id, "client": client_id, "user": user.pk}
    with connections[_database()].cursor() as cursor:
        cursor.execute(_LOCK, params)
        row = cursor.fetchone()
        if row is None:
            cursor.execute(_ADD, params)
            cursor.execute(_LOCK, params)
            row = cursor.fetchone()
    owner, last, role = row
    if owner != user.pk:
        raise ClientOfAnotherUser(str(client_id))
    return int(last), role


def _group_push(
    *, org: Organization, user: User, client_id: uuid.UUID, mutations: list[Mutation], outcome: PushOutcome
) -> int | None:
    """Apply mutations from the start of `mutations` in one transaction, for at most
    SYNC_PUSH_TRANSACTION_MAX_MS once the org's lock is held (at least one mutation).
    Appends their results to `outcome`; returns how many it processed, or None on a gap
    (`outcome.expected` set; the ones before it commit)."""
    done = 0
    with transaction.atomic(using=_database()):
        org_lock_take(org_id=org.id)  # first: the lock order of every writer of the org
        locked_at = time.monotonic()
        last, role = _client_lock(org_id=org.id, client_id=client_id, user=user)
        advanced = last
        properties: dict[Any, Any] = {}  # looked up in this transaction, under the org's lock
        for mutation in mutations:
            if done and time.monotonic() - locked_at >= settings.SYNC_PUSH_TRANSACTION_MAX_MS / 1000:
                break  # commit: other writers of the org wait no longer than this
            if mutation.id <= advanced:
                outcome.results.append(MutationResult(id=mutation.id, status=ALREADY_APPLIED))
            elif mutation.id != advanced + 1:
                outcome.expected = advanced + 1
                break
            else:
                outcome.results.append(
                    _mutation_run(org=org, user=user, role=role, mutation=mutation, properties=properties)
                )
                advanced = mutation.id
            done += 1
        if advanced > last:
            with connections[_database()].cursor() as cursor:
                cursor.execute(_ADVANCE, {"id": advanced, "org": org.id, "client": client_id})
    outcome.last_mutation_id = max(outcome.last_mutation_id, advanced)
    return None if outcome.expected is not None else done


def _mutation_run(
    *, org: Organization, user: User, role: str | None, mutation: Mutation, properties: dict[Any, Any]
) -> MutationResult:
    if role is None or not role_allows(role, Role.MANAGER):  # the role now, not at the request's start
        error = {"code": "forbidden", "detail": "Only owners and managers may change entries."}
        return MutationResult(id=mutation.id, status=REJECTED, error=error)
    try:
        # Checks come before any write, and each finance service runs in its own savepoint:
        # a rejected or failed mutation leaves nothing behind.
        version = mutation_apply(org=org, user=user, mutation=mutation, properties=properties)
    except Rejected as rejected:
        return MutationResult(id=mutation.id, status=REJECTED, error=rejected.error)
    except IntegrityError as error:  # a database rule the checks did not foresee
        detail = {
            "code": "invalid",
            "non_field_errors": [f"Refused by the database: {type(error).__name__}."],
        }
        return MutationResult(id=mutation.id, status=REJECTED, error=detail)
    return MutationResult(id=mutation.id, status=APPLIED, version=version)


def sync_push(
    *, org: Organization, user: User, client_id: uuid.UUID, mutations: list[Mutation]
) -> PushOutcome:
    """Process `mutations` in order; stops at a gap. Raises ClientOfAnotherUser."""
    outcome = PushOutcome(last_mutation_id=sync_client_peek(org_id=org.id, client_id=client_id, user=user))
    with delivery_batch():  # the committed mutations' handlers run once, when the batch ends
        _mutations_push(org=org, user=user, client_id=client_id, mutations=mutations, outcome=outcome)
    return outcome


def _mutations_push(
    *, org: Organization, user: User, client_id: uuid.UUID, mutations: list[Mutation], outcome: PushOutcome
) -> None:
    start = 0
    while start < len(mutations):
        if mutations[start].id <= outcome.last_mutation_id:
            outcome.results.append(MutationResult(id=mutations[start].id, status=ALREADY_APPLIED))
            start += 1
            continue
        done = _group_push(
            org=org, user=user, client_id=client_id, mutations=mutations[start:], outcome=outcome
        )
        if done is None:
            assert outcome.expected is not None  # set by _group_push with the gap it stopped at
            outcome.last_mutation_id = outcome.expected - 1
            return
        start += done
