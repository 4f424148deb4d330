"""One write under an Idempotency-Key, from the claim to the kept response.

    begin()             before the handler: Redis claim; may answer at once with a
                        replay (cached), 422 (other fingerprint) or 409 (in flight)
    complete(response)  inside the write's transaction, after the handler: a 2xx is
                        kept by inserting the record in that same transaction; any
                        other outcome, or losing the key to a concurrent duplicate,
                        rolls the whole transaction back
    after_transaction() after commit/rollback: cache the answer (sent with the write
                        position's Redis call right after the commit, else alone) or
                        release the claim in Redis; when nothing was kept, answer from
                        the record that won, if any

Postgres decides. Redis only saves work: a cached replay skips Postgres, a claim
turns a concurrent duplicate into a quick 409 instead of a wasted run. If Redis lost
a cached response (flushed, down), the request runs and its transaction meets the
committed record at insert time: it rolls back and replays that record instead.
"""

from django.conf import settings
from django.db import connections, router, transaction
from django.http import HttpResponseBase

from core.redis_riders import after_commit_rider_add, after_commit_rider_withdraw
from idempotency.exceptions import IdempotencyKeyInFlight, IdempotencyKeyReused, Replay
from idempotency.identity import IdempotencyScope
from idempotency.models import IdempotencyRecord
from idempotency.redis_fast_path import ClaimAhead, ClaimOutcome, StoreAhead, fast_path
from idempotency.selectors import idempotency_record_get
from idempotency.services import idempotency_record_insert
from idempotency.stored_response import StoredResponse
from monitoring.metrics import idempotency_redis_degraded, idempotency_requests


def write_database() -> str:
    return router.db_for_write(IdempotencyRecord)


class IdempotentCall:
    def __init__(self, *, scope: IdempotencyScope, fingerprint: bytes) -> None:
        self.scope = scope
        self.fingerprint = fingerprint
        self._claim_value = b""  # set while we hold the Redis claim
        self._redis_failed = False  # one Redis timeout per request at most
        self._kept: StoredResponse | None = None
        self._store_ahead: StoreAhead | None = None  # the kept answer, waiting for the commit's Redis call
        self._lost_to_duplicate = False

    @classmethod
    def begin(cls, *, ahead: ClaimAhead) -> "IdempotentCall":
        """Start the call, or raise the answer (Replay, 422, 409) that replaces running it.
        The claim is `ahead`'s if it was sent already (with the rate limit), else made now."""
        scope, fingerprint = ahead.scope, ahead.fingerprint
        call = cls(scope=scope, fingerprint=fingerprint)
        if ahead.sent:
            claim = ahead.result
        else:
            lock_ttl_ms = settings.IDEMPOTENCY_LOCK_TTL_MS
            claim = fast_path().claim(scope=scope, fingerprint=fingerprint, lock_ttl_ms=lock_ttl_ms)
        if claim is None:
            idempotency_redis_degraded.inc()
            call._redis_failed = True
            call._wait_for_duplicates_in_postgres()
            return call  # run; the primary key on the scope keeps it exactly-once
        if claim.outcome is ClaimOutcome.CLAIMED:
            call._claim_value = claim.value
            return call
        if claim.outcome is ClaimOutcome.DONE:
            assert claim.stored is not None
            call._answer_with(claim.stored)
        if claim.holder_fingerprint != fingerprint:
            call._answer_with_mismatch()
        # The holder may have committed and died before caching its answer.
        committed = idempotency_record_get(scope=scope)
        if committed is not None:
            call._store(committed)
            call._answer_with(committed)
        idempotency_requests.labels(outcome="conflict").inc()
        raise IdempotencyKeyInFlight()

    def _wait_for_duplicates_in_postgres(self) -> None:
        """Without Redis, a transaction-scoped advisory lock on the scope stands in for
        the claim: a concurrent duplicate waits here, before its handler takes the
        org's change-log lock, then answers from the record the first one committed
        (or runs, if the first rolled back). Lock order: key, then org, then rows."""
        with connections[write_database()].cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [self.scope.lock_id()])
        committed = idempotency_record_get(scope=self.scope)
        if committed is not None:
            self._answer_with(committed)

    def complete(self, response: HttpResponseBase, *, keep: bool | None = None) -> None:
        """Inside the write's transaction: keep a success (or what the view says to
        keep), roll back anything else."""
        if keep is None:
            keep = 200 <= response.status_code < 300
        if keep:
            render = getattr(response, "render", None)
            if render is not None:
                render()
            stored = StoredResponse(
                fingerprint=self.fingerprint,
                status=response.status_code,
                content_type=response.get("Content-Type", ""),
                body=bytes(response.content),  # type: ignore[attr-defined]
            )
            ttl = settings.IDEMPOTENCY_TTL_SECONDS
            if idempotency_record_insert(scope=self.scope, response=stored, ttl_seconds=ttl):
                self._kept = stored
                if not self._redis_failed:
                    self._store_ahead = StoreAhead(
                        scope=self.scope, stored=stored, ttl_ms=self._ttl_ms(stored)
                    )
                    after_commit_rider_add(self._store_ahead)
                return
            self._lost_to_duplicate = True
        transaction.set_rollback(True, using=write_database())

    def after_transaction(self) -> None:
        """After commit or rollback. Raises the answer when a duplicate's record wins."""
        if self._kept is not None:
            if not self._store_ahead_sent():
                self._store(self._kept)
            self._claim_value = b""  # the answer replaced our claim
            idempotency_requests.labels(outcome="executed").inc()
            return
        # Nothing kept: the handler failed, or a duplicate committed the key first.
        # Either way a committed record, if there is one, is the answer.
        winner = idempotency_record_get(scope=self.scope)
        if winner is not None:
            self._store(winner)
            self._answer_with(winner)
        self._release()
        if self._lost_to_duplicate:  # the winner expired or vanished meanwhile: let the client retry
            idempotency_requests.labels(outcome="conflict").inc()
            raise IdempotencyKeyInFlight()
        idempotency_requests.labels(outcome="rolled_back").inc()

    def abandon(self) -> None:
        """The transaction died with an exception: nothing was kept; free the key at once."""
        idempotency_requests.labels(outcome="rolled_back").inc()
        self._store_ahead_sent()  # never sent now: nothing was committed
        self._release()

    def _store_ahead_sent(self) -> bool:
        """Take the kept answer back from the after-commit Redis call; True if that call
        carried it (it happens right after a commit that stored a write position)."""
        ahead, self._store_ahead = self._store_ahead, None
        if ahead is None:
            return False
        after_commit_rider_withdraw(ahead)
        return ahead.sent

    @staticmethod
    def _ttl_ms(stored: StoredResponse) -> int:
        """Never cached longer than its record lives."""
        ttl_ms = settings.IDEMPOTENCY_TTL_SECONDS * 1000
        if stored.expires_in_ms is not None:
            ttl_ms = min(ttl_ms, stored.expires_in_ms)
        return ttl_ms

    def _store(self, stored: StoredResponse) -> None:
        """Cache a committed answer. Best effort."""
        if self._redis_failed:
            return
        fast_path().store(scope=self.scope, stored=stored, ttl_ms=self._ttl_ms(stored))
        self._claim_value = b""  # the answer replaced our claim

    def _release(self) -> None:
        if self._claim_value and not self._redis_failed:
            fast_path().release(scope=self.scope, claim_value=self._claim_value)
        self._claim_value = b""

    def _answer_with(self, stored: StoredResponse) -> None:
        if stored.fingerprint != self.fingerprint:
            self._answer_with_mismatch()
        idempotency_requests.labels(outcome="replayed").inc()
        raise Replay(stored)

    def _answer_with_mismatch(self) -> None:
        idempotency_requests.labels(outcome="mismatch").inc()
        raise IdempotencyKeyReused()
