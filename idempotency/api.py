"""The one hook: every write view under /v1/orgs derives from IdempotentWritesMixin
(through tenancy.access.OrgScopedApi, and OrganizationListCreateApi for POST /v1/orgs).

A write carrying an Idempotency-Key runs its whole DRF dispatch inside one
transaction: authentication and org resolution, then (in `initial`) the key check and
Redis claim, then the handler, then the record insert. The record and the write
commit or roll back together. Writes without the header take the plain path.
"""

import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponseBase
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.authentication import authenticated_user
from idempotency.calls import IdempotentCall, write_database
from idempotency.exceptions import IdempotencyKeyInvalid, IdempotencyKeyRequired, Replay
from idempotency.identity import HEADER, NO_ORG, IdempotencyScope, key_is_valid, request_fingerprint
from monitoring.metrics import idempotency_requests

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

if TYPE_CHECKING:
    _ViewBase = APIView  # only ever mixed into DRF views: checked as one
else:
    _ViewBase = object


class IdempotentWritesMixin(_ViewBase):
    """Honours Idempotency-Key on POST, PUT, PATCH and DELETE (CONTRACT §3)."""

    _idempotent_call: IdempotentCall | None = None

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
        super().initial(request, *args, **kwargs)  # auth, org and role first
        # A method the view does not have is a 405 whatever the key: claiming the key
        # first would answer 422 (or replay) for a request that can never run.
        method = request.method
        if method in WRITE_METHODS and hasattr(self, method.lower()):
            self._idempotent_call = self._begin_idempotent_call(request, method)

    # DRF renders whatever HttpResponseBase handle_exception returns; its stubs say Response.
    def handle_exception(self, exc: Exception) -> HttpResponseBase:  # type: ignore[override]
        if isinstance(exc, Replay):
            return exc.stored.replay()
        return super().handle_exception(exc)

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
        scope = IdempotencyScope.of(
            org_id=self.idempotency_org_id(), user_id=authenticated_user(request).pk, key=key
        )
        fingerprint = request_fingerprint(method=method, path=request.path, body=request.data)
        return IdempotentCall.begin(scope=scope, fingerprint=fingerprint)
