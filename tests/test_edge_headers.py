"""What the origin tells the edge (CONTRACT §6): org reads every member may share carry
`s-maxage` and org-prefixed tags; every other response is private and untagged."""

from typing import Any

import pytest
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.test import RequestFactory

from edgecache.headers import EdgeCacheHeadersMiddleware, mark_cacheable

pytestmark = pytest.mark.django_db

TAG_HEADERS = ("Surrogate-Key", "xkey", "Cache-Tag")


def assert_private(response: Any) -> None:
    policy = {part.strip() for part in response["Cache-Control"].split(",")}
    assert policy & {"private", "no-store"}, policy
    assert not any(part.startswith("s-maxage") or part == "public" for part in policy), policy
    for header in TAG_HEADERS:
        assert not response.has_header(header)


def test_cacheable_reads_carry_s_maxage_and_tags(tenant, settings):
    settings.CDN_S_MAXAGE_SECONDS = 42
    response = tenant.viewer.get(tenant.url("/finance/summary"))
    assert response["Cache-Control"] == "max-age=0, s-maxage=42"
    assert response["xkey"] == f"org-{tenant.org.id} org-{tenant.org.id}-summary"


def test_everything_else_is_private_and_untagged(tenant, other_tenant, client_for, make_user, client):
    created = tenant.owner.post(tenant.url("/expenses"), tenant.entry_payload(), format="json")
    responses = {
        "POST": created,
        "PATCH": tenant.owner.patch(
            tenant.url(f"/expenses/{created.json()['id']}"), {"amount": "2.00"}, format="json"
        ),
        "org detail (shows the caller's role)": tenant.viewer.get(tenant.url()),
        "my orgs": tenant.viewer.get("/v1/orgs"),
        "members": tenant.viewer.get(tenant.url("/members")),
        "not a member": other_tenant.owner.get(tenant.url("/finance/summary")),
        "no token": client_for(None).get(tenant.url("/finance/summary")),
        "unknown entry": tenant.viewer.get(tenant.url("/expenses/01900000-0000-7000-8000-000000000000")),
        "bad filter": tenant.viewer.get(tenant.url("/expenses?from=yesterday")),
        "token": client_for(None).post("/v1/auth/token", {"username": "x", "password": "y"}, format="json"),
        "health": client.get("/v1/system/health"),
    }
    for name, response in responses.items():
        assert response.status_code < 500, name
        assert_private(response)


def test_delete_is_private(tenant):
    created = tenant.owner.post(tenant.url("/expenses"), tenant.entry_payload(), format="json")
    response = tenant.owner.delete(tenant.url(f"/expenses/{created.json()['id']}"))
    assert response.status_code == 204
    assert_private(response)


def middleware_response(settings: Any, prepare: Any, method: str = "GET") -> HttpResponseBase:
    def view(request: Any) -> HttpResponse:
        response = HttpResponse("{}", content_type="application/json")
        mark_cacheable(response, tags=["org-1", "org-1-summary"])
        prepare(response)
        return response

    request = getattr(RequestFactory(), method.lower())("/v1/orgs/x")
    return EdgeCacheHeadersMiddleware(view)(request)


def test_a_marked_response_that_sets_a_cookie_is_never_shared(settings):
    response = middleware_response(settings, lambda r: r.set_cookie("sessionid", "abc"))
    assert_private(response)


def test_a_marked_response_varying_on_anything_per_user_is_never_shared(settings):
    for vary in ("Cookie", "Authorization", "Accept-Encoding, Authorization"):
        response = middleware_response(settings, lambda r, vary=vary: r.__setitem__("Vary", vary))
        assert_private(response)
    shared = middleware_response(settings, lambda r: r.__setitem__("Vary", "Accept-Encoding, Origin"))
    assert "s-maxage=" in shared["Cache-Control"]


def test_a_marked_response_to_an_unsafe_method_or_with_an_error_is_not_shared(settings):
    assert_private(middleware_response(settings, lambda r: None, method="POST"))
    assert_private(middleware_response(settings, lambda r: setattr(r, "status_code", 404)))


def test_a_view_cannot_smuggle_its_own_tags_or_s_maxage(settings):
    def view(request: Any) -> HttpResponse:
        response = HttpResponse("{}")
        response["xkey"] = "org-2"
        response["Cache-Control"] = "public, s-maxage=600"
        return response

    assert_private(EdgeCacheHeadersMiddleware(view)(RequestFactory().get("/v1/orgs/x")))


def test_with_no_cdn_nothing_is_marked_for_a_shared_cache(tenant, settings):
    settings.CDN_PROVIDER = "none"
    assert_private(tenant.viewer.get(tenant.url("/finance/summary")))


def test_static_files_and_admin_keep_their_own_cache_policy(admin_client):
    response = admin_client.get("/admin/")
    assert "no-store" in response["Cache-Control"] or "private" in response["Cache-Control"]
    assert not response.has_header("xkey")
