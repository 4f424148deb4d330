"""`EdgeCachedApi`: a mixin for org-scoped read views whose answers every member of the
org may share at the edge."""

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from edgecache.headers import mark_cacheable
from edgecache.tags import org_tag


class EdgeCachedApi:
    """Put before `OrgScopedApi`. Only a 200 to GET/HEAD whose org membership the view
    verified (`self.org` is set only after that check) is marked for the edge."""

    def edge_cache_tags(self, request: Request) -> list[str]:
        raise NotImplementedError

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        org = getattr(self, "org", None)
        if request.method in ("GET", "HEAD") and response.status_code == 200 and org is not None:
            mark_cacheable(response, tags=[org_tag(org.id), *self.edge_cache_tags(request)])
        return response
