"""Varnish with vmod_xkey (deploy/varnish/default.vcl): `PURGE /` with the tags in an
`xkey-purge` (hard) or `xkey-softpurge` header, to every node in CDN_VARNISH_URLS.
The VCL accepts purges only from its `purgers` ACL."""

import httpx
from django.conf import settings

from edgecache.backends.base import PurgeBackend, http_client, timeout


class VarnishPurge(PurgeBackend):
    name = "varnish"
    batch_size = 100  # keeps the header well under Varnish's 8 KiB http_req_hdr_len

    def send(self, batch: list[str], *, soft: bool) -> httpx.Response:
        header = "xkey-softpurge" if soft else "xkey-purge"
        response: httpx.Response | None = None
        for base_url in settings.CDN_VARNISH_URLS:
            response = http_client().request(
                "PURGE", base_url.rstrip("/") + "/", headers={header: " ".join(batch)}, timeout=timeout()
            )
            if not response.is_success:
                return response  # a node that did not purge: the whole batch is retried
        if response is None:
            raise httpx.InvalidURL("CDN_VARNISH_URLS is empty")
        return response
