"""The SSRF guard for Web Push: the server POSTs to a URL a user gave it, so the URL must
name a push service, never an internal address.

Nothing user-chosen is resolved: the URL's host is compared, as text, with
PUSH_WEBPUSH_ALLOWED_HOSTS (an exact name, or "*.domain" for the subdomains of a
domain). https only, on the default port; plain http (any port) only for a loopback
host that the allow list names (the local stack and tests). Redirects are never
followed when sending (push/senders/http.py), so an allowed host cannot bounce a send
elsewhere.
"""

import re
from urllib.parse import urlsplit

from django.conf import settings

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_ENDPOINT_LENGTH = 2048


class EndpointRefused(ValueError):
    pass


def _host_allowed(host: str, allowed: list[str]) -> bool:
    for raw in allowed:
        entry = raw.strip().lower().strip("[]")
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def webpush_endpoint_check(endpoint: str) -> str:
    """Return the endpoint if it may be sent to, else raise EndpointRefused."""
    if len(endpoint) > MAX_ENDPOINT_LENGTH:
        raise EndpointRefused(f"Ensure this URL has at most {MAX_ENDPOINT_LENGTH} characters.")
    if any(ord(char) <= 0x20 or ord(char) >= 0x7F for char in endpoint):
        raise EndpointRefused("The URL may contain only printable ASCII characters.")
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        raise EndpointRefused("Not a valid URL.") from None
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None:
        raise EndpointRefused("The URL must name a host, without credentials.")
    if not _host_allowed(host, settings.PUSH_WEBPUSH_ALLOWED_HOSTS):
        raise EndpointRefused("This push service host is not allowed.")
    if host in LOOPBACK_HOSTS:
        if parts.scheme not in ("http", "https"):
            raise EndpointRefused("The URL must use https.")
    elif parts.scheme != "https" or port not in (None, 443):
        raise EndpointRefused("The URL must use https on the default port.")
    if parts.fragment:
        raise EndpointRefused("The URL may not have a fragment.")
    return endpoint


def webpush_endpoint_pattern() -> str:
    """The endpoints webpush_endpoint_check accepts, as a regex for the API schema: the
    allowed hosts (https on the default port; http or https on any port for loopback),
    printable ASCII, no fragment."""
    alternatives = []
    for raw in settings.PUSH_WEBPUSH_ALLOWED_HOSTS:
        entry = raw.strip().lower().strip("[]")
        if entry.startswith("*."):
            host = r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*" + re.escape(entry[1:])
        else:
            host = re.escape(f"[{entry}]" if ":" in entry else entry)
        if entry in LOOPBACK_HOSTS:
            alternatives.append(rf"https?://{host}(:[0-9]{{1,4}})?")
        else:
            alternatives.append(rf"https://{host}(:443)?")
    return rf"^({'|'.join(alternatives)})(/[!-\"$-~]*)?$"
