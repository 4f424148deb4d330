"""Gzip for responses of `GZIP_MIN_BYTES` (1 KiB) or more when the client accepts it."""

from django.conf import settings
from django.middleware.gzip import GZipMiddleware as DjangoGZipMiddleware


class GZipMiddleware(DjangoGZipMiddleware):
    """Django's gzip middleware (with its BREACH padding), with our size threshold.

    Below 1 KiB gzip saves little and costs CPU on every response.
    """

    @property
    def min_length(self) -> int:
        return settings.GZIP_MIN_BYTES
