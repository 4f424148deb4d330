"""Cloudflare: purge by Cache-Tag, at most 100 tags per call
(POST /client/v4/zones/{zone}/purge_cache with {"tags": [...]}, bearer token).
Cloudflare has no soft purge; `soft` purges hard."""

import json

import httpx
from django.conf import settings

from edgecache.backends.base import PurgeAnswer, PurgeBackend, http_client, timeout


class CloudflarePurge(PurgeBackend):
    name = "cloudflare"
    batch_size = 100

    def send(self, batch: list[str], *, soft: bool) -> httpx.Response:
        url = (
            f"{settings.CDN_CLOUDFLARE_API_URL.rstrip('/')}/client/v4/zones/"
            f"{settings.CDN_CLOUDFLARE_ZONE_ID}/purge_cache"
        )
        headers = {"Authorization": f"Bearer {settings.CDN_CLOUDFLARE_API_TOKEN}"}
        return http_client().post(url, json={"tags": batch}, headers=headers, timeout=timeout())

    def accepted(self, response: PurgeAnswer) -> bool:
        # Cloudflare can answer 200 with {"success": false, "errors": [...]}.
        if not response.is_success:
            return False
        try:
            body = json.loads(response.text)
        except ValueError:
            return False
        return isinstance(body, dict) and bool(body.get("success"))
