"""Fastly: purge by surrogate key, at most 256 keys per call
(POST /service/{id}/purge with {"surrogate_keys": [...]}, `Fastly-Key` auth;
`Fastly-Soft-Purge: 1` marks objects stale instead of removing them)."""

import httpx
from django.conf import settings

from edgecache.backends.base import PurgeBackend, http_client, timeout


class FastlyPurge(PurgeBackend):
    name = "fastly"
    batch_size = 256

    def send(self, batch: list[str], *, soft: bool) -> httpx.Response:
        headers = {"Fastly-Key": settings.CDN_FASTLY_API_TOKEN, "Accept": "application/json"}
        if soft:
            headers["Fastly-Soft-Purge"] = "1"
        url = f"{settings.CDN_FASTLY_API_URL.rstrip('/')}/service/{settings.CDN_FASTLY_SERVICE_ID}/purge"
        return http_client().post(url, json={"surrogate_keys": batch}, headers=headers, timeout=timeout())
