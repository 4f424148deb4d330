"""The edge's auth preflight: "may the token in this request read org O?"

Varnish asks this before it serves an org object from its cache, and remembers a yes
per token and org for `CDN_AUTH_TTL_SECONDS`: that bounds how long a removed member or
a revoked token can still be served cached objects. A no is never remembered.
"""

import uuid

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from edgecache.headers import mark_cacheable
from edgecache.tags import org_section_tag
from tenancy.access import OrgScopedApi


class EdgeAuthzApi(OrgScopedApi):
    """200 for any member (every role may read); 401 and 404 as on every org route."""

    @extend_schema(exclude=True)  # for the edge, not for API clients
    def get(self, request: Request, org_id: uuid.UUID) -> Response:
        response = Response({"org_id": str(self.org.id), "allowed": True})
        mark_cacheable(
            response, tags=[org_section_tag(self.org.id, "access")], s_maxage=settings.CDN_AUTH_TTL_SECONDS
        )
        return response
