"""The edge's auth preflight: "may the token in this request read org O?"

Varnish asks this before it serves an org object from its cache, and remembers a yes
per token and org for `CDN_AUTH_TTL_SECONDS` (never past the token's expiry). A
revocation does not wait that out: every yes is tagged with its user, and a token
revoked or a membership removed purges that tag (edgecache.purge.tags_for_change). A no is never
remembered.
"""

import time
import uuid

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import authenticated_user
from edgecache.headers import mark_cacheable
from edgecache.tags import org_section_tag, user_access_tag
from tenancy.access import OrgScopedApi


class EdgeAuthzApi(OrgScopedApi):
    """200 for any member (every role may read); 401 and 404 as on every org route."""

    # Varnish keeps a yes for CDN_AUTH_TTL_SECONDS (purged on revocation): a yes from
    # another process's access cache, up to ACCESS_CACHE_SECONDS old, could outlive the
    # purge there. The preflight always reads the primary.
    access_cacheable = False

    @extend_schema(exclude=True)  # for the edge, not for API clients
    def get(self, request: Request, org_id: uuid.UUID) -> Response:
        response = Response({"org_id": str(self.org.id), "allowed": True})
        expiry = getattr(request.auth, "expiry", None)
        seconds_left = (
            int(expiry.timestamp() - time.time()) if expiry is not None else settings.CDN_AUTH_TTL_SECONDS
        )
        s_maxage = min(settings.CDN_AUTH_TTL_SECONDS, seconds_left)
        if s_maxage >= 1:
            tags = [org_section_tag(self.org.id, "access"), user_access_tag(authenticated_user(request).pk)]
            mark_cacheable(response, tags=tags, s_maxage=s_maxage)
        return response
