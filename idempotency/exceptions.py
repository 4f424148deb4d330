"""The answers an idempotent write can get instead of running (CONTRACT §3)."""

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException

from idempotency.stored_response import StoredResponse


class IdempotencyKeyRequired(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "This write needs an Idempotency-Key header."
    default_code = "idempotency_key_required"


class IdempotencyKeyInvalid(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Idempotency-Key must be 1 to 255 printable ASCII characters."
    default_code = "idempotency_key_invalid"


class IdempotencyKeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used for a different request (body, method or path)."
    default_code = "idempotency_key_reused"


class IdempotencyKeyInFlight(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A request with this Idempotency-Key is still running; retry after a moment."
    default_code = "idempotency_key_in_flight"

    def __init__(self) -> None:
        super().__init__()
        self.wait = settings.IDEMPOTENCY_RETRY_AFTER_SECONDS  # DRF turns `wait` into Retry-After


class Replay(Exception):
    """Answer with a stored response instead of running the request."""

    def __init__(self, stored: StoredResponse) -> None:
        super().__init__("idempotent replay")
        self.stored = stored
