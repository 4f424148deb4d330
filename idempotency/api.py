"""The one hook: every write view under /v1/orgs derives from IdempotentWritesMixin
(through tenancy.access.OrgScopedApi, and OrganizationListCreateApi for POST /v1/orgs).

A write carrying an Idempotency-Key runs its whole DRF dispatch inside one
transaction: authentication and org resolution, then (in `initial`) the key check and
Redis claim (sent in the rate limit's Redis round trip), then the handler, then the
record insert. The record and the write
commit or roll back together. Writes without the header take the plain path.
"""

import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponseBase
from rest_framework.exceptions import APIException, Throttled
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.authentication import authenticated_user
from idempotency.calls import IdempotentCall, write_database
from idempotency.exceptions import IdempotencyKeyInvalid, IdempotencyKeyRequired, Replay
from idempotency.identity import HEADER, NO_ORG, IdempotencyScope, key_is_valid, request_fingerprint
from idempotency.redis_fast_path import ClaimAhead
from monitoring.metrics import idempotency_requests

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

if TYPE_CHECKING:
    _ViewBase = APIView  # only ever mixed into DRF views: checked as one
else:
    _ViewBase = object


class IdempotentWritesMixin(_ViewBase):
    """Honours Idempotency-Key on POST, PUT, PATCH and DELETE (CONTRACT §3)."""

    _idempotent_call: IdempotentCall | None = None
    _claim_ahead: ClaimAhead | None = None  # this request's claim, prepared before the rate limit
    _claim_ahead_error: APIException | None = None  # the body's parse error, raised after the rate limit

    def bind_database(self, request: HttpRequest, **kwargs: Any) -> None:
        """Route the request to its database cluster before the keyed write's
        transaction opens there (views of one org: the org's cluster)."""

    def idempotency_org_id(self) -> uuid.UUID:
        """The org part of the key's scope; views outside an org use the user alone."""
        return NO_ORG

    def idempotency_keeps(self, response: HttpResponseBase) -> bool:
        """Whether the response is an outcome to commit and keep for replay: a 2xx. A view
        whose refusals may follow committed writes (a sync push stopped by a gap, with
        the mutations before it applied) keeps those too."""
        return 200 <= response.status_code < 300

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method not in WRITE_METHODS or HEADER not in request.headers:
            return super().dispatch(request, *args, **kwargs)
        self._idempotent_call = None
        self.bind_database(request, **kwargs)
        try:
            with transaction.atomic(using=write_database()):
                response = super().dispatch(request, *args, **kwargs)
                call = self._idempotent_call
                if call is not None:
                    call.complete(response, keep=self.idempotency_keeps(response))
        except BaseException:
            # Rolled back by an error outside DRF's handling: free the key at once,
            # rather than letting retries meet our claim (409) until it expires.
            if self._idempotent_call is not None:
                self._idempotent_call.abandon()
            raise
        if call is None:
            return response
        try:
            call.after_transaction()
        except (Replay, APIException) as exc:  # the answers, rendered like any other
            response = self.finalize_response(self.request, self.handle_exception(exc), *args, **kwargs)
        return response

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self._claim_ahead, self._claim_ahead_error = None, None
        super().initial(request, *args, **kwargs)  # auth, org and role, then the rate limit
        # A method the view does not have is a 405 whatever the key: claiming the key
        # first would answer 422 (or replay) for a request that can never run.
        method = request.method
        if method in WRITE_METHODS and hasattr(self, method.lower()):
            self._idempotent_call = self._begin_idempotent_call(request, method)

    def check_throttles(self, request: Request) -> None:
        """The claim of a valid key rides along with the rate limit's Redis call (one
        round trip for both: `rate_limit_riders`); a request the rate limit refuses
        frees the claim it got."""
        self._claim_ahead = self._claim_to_send(request)
        try:
            super().check_throttles(request)
        except Throttled:
            if self._claim_ahead is not None:
                self._claim_ahead.release()
            raise

    def rate_limit_riders(self) -> list[ClaimAhead]:
        """What the rate limit sends in its round trip (accounts.rate_limit)."""
        return [] if self._claim_ahead is None else [self._claim_ahead]

    # DRF renders whatever HttpResponseBase handle_exception returns; its stubs say Response.
    def handle_exception(self, exc: Exception) -> HttpResponseBase:  # type: ignore[override]
        if isinstance(exc, Replay):
            return exc.stored.replay()
        return super().handle_exception(exc)

    def _claim_to_send(self, request: Request) -> ClaimAhead | None:
        """The claim of a keyed write that will run, before the rate limit; None when the
        request will be refused first (no valid key, no such method, a body that does not
        parse: that error is raised where it was before, after the rate limit)."""
        method = request.method
        key = request.headers.get(HEADER)
        if method not in WRITE_METHODS or not hasattr(self, method.lower()) or key is None:
            return None
        if not key_is_valid(key):
            return None
        try:
            body = request.data
        except APIException as exc:  # DRF leaves an empty body behind: keep the error itself
            self._claim_ahead_error = exc
            return None
        scope = IdempotencyScope.of(
            org_id=self.idempotency_org_id(), user_id=authenticated_user(request).pk, key=key
        )
        fingerprint = request_fingerprint(method=method, path=request.path, body=body)
        lock_ttl_ms = settings.IDEMPOTENCY_LOCK_TTL_MS
        return ClaimAhead(scope=scope, fingerprint=fingerprint, lock_ttl_ms=lock_ttl_ms)

    def _begin_idempotent_call(self, request: Request, method: str) -> IdempotentCall | None:
        key = request.headers.get(HEADER)
        if key is None:
            if settings.IDEMPOTENCY_REQUIRED:
                idempotency_requests.labels(outcome="invalid").inc()
                raise IdempotencyKeyRequired()
            return None
        if not key_is_valid(key):
            idempotency_requests.labels(outcome="invalid").inc()
            raise IdempotencyKeyInvalid()
        if self._claim_ahead_error is not None:
            raise self._claim_ahead_error
        assert self._claim_ahead is not None  # prepared in check_throttles: a valid key, a method we have
        return IdempotentCall.begin(ahead=self._claim_ahead)
