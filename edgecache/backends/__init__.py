"""Purge backends, one per CDN, chosen by `CDN_PROVIDER`."""

from django.conf import settings

from edgecache.backends.base import PurgeBackend, PurgeFailed
from edgecache.backends.cloudflare import CloudflarePurge
from edgecache.backends.fastly import FastlyPurge
from edgecache.backends.varnish import VarnishPurge

__all__ = ["PurgeBackend", "PurgeFailed", "purge_backend"]

_BACKENDS: dict[str, type[PurgeBackend]] = {
    "varnish": VarnishPurge,
    "fastly": FastlyPurge,
    "cloudflare": CloudflarePurge,
}


def purge_backend() -> PurgeBackend | None:
    """The configured backend, or None for `CDN_PROVIDER=none`."""
    provider = settings.CDN_PROVIDER
    if provider == "none":
        return None
    try:
        return _BACKENDS[provider]()
    except KeyError:
        raise ValueError(
            f"CDN_PROVIDER must be one of varnish, fastly, cloudflare, none; got {provider!r}"
        ) from None
