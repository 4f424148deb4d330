"""What a response tells the edge: shared-cacheable with tags, or private.

Views mark org objects that every member may share with `mark_cacheable`; the
middleware turns the mark into headers at the very end, when the response is final,
and refuses it if anything makes the response per-user (a cookie, a Vary on anything
but Accept-Encoding and Origin). Every other response is `private, no-store`, unless
it already said how it may be cached (static files, admin).
"""

from collections.abc import Callable, Sequence

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import cc_delim_re

TAG_HEADERS = ("Surrogate-Key", "xkey", "Cache-Tag")
PRIVATE = "private, no-store"
# Origin: corsheaders varies on it so each browser origin gets its own CORS answer;
# requests without Origin (apps, servers) share one variant. Nothing per user varies.
SHAREABLE_VARY = frozenset({"accept-encoding", "origin"})
_MARK = "edge_cache_tags"


def mark_cacheable(response: HttpResponseBase, *, tags: Sequence[str], s_maxage: int | None = None) -> None:
    """Let the edge share this response between everyone it authorizes for the org."""
    setattr(response, _MARK, (list(dict.fromkeys(tags)), s_maxage))


def _shareable(request: HttpRequest, response: HttpResponseBase) -> bool:
    if request.method not in ("GET", "HEAD") or response.status_code != 200:
        return False
    if response.cookies or response.has_header("Set-Cookie"):
        return False
    vary = {v.strip().lower() for v in cc_delim_re.split(response.get("Vary", "")) if v.strip()}
    return vary <= SHAREABLE_VARY


class EdgeCacheHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        mark = getattr(response, _MARK, None)
        for header in TAG_HEADERS:
            del response[header]  # only this middleware sets them
        if mark is not None and settings.CDN_PROVIDER != "none" and _shareable(request, response):
            tags, s_maxage = mark
            ttl = settings.CDN_S_MAXAGE_SECONDS if s_maxage is None else s_maxage
            # max-age=0: a browser keeps nothing; the edge rewrites this for clients anyway.
            response["Cache-Control"] = f"max-age=0, s-maxage={ttl}"
            response["Surrogate-Key"] = response["xkey"] = " ".join(tags)
            response["Cache-Tag"] = ",".join(tags)  # Cloudflare separates with commas
        elif "Cache-Control" not in response or "s-maxage" in response["Cache-Control"]:
            response["Cache-Control"] = PRIVATE
        return response
