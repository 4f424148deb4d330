"""System routes: health is open and discreet; the rest is for staff or METRICS_TOKEN."""

import httpx
import pytest

from tests.live_server import free_port, running_server

pytestmark = pytest.mark.django_db

PROTECTED = [
    "/v1/system/monitoring/partitions/verify",
    "/v1/system/metrics/aggregated",  # observability
    "/v1/system/metrics/prometheus",  # observability
]


def test_health_is_open_and_reveals_nothing_sensitive(client_for):
    response = client_for(None).get("/v1/system/health")
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
    assert response["Cache-Control"] == "no-store"


def test_health_is_503_when_the_primary_is_down():
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/nothing"
    with running_server(dead, DB_MIN_CONNECTIONS="0", DB_CONNECT_TIMEOUT_SECONDS="1") as url:
        response = httpx.get(url + "/v1/system/health", timeout=30)
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "failing"
    assert "127.0.0.1" not in response.text and "postgres" not in response.text


def test_health_is_degraded_when_redis_is_unreachable(django_db_blocker):
    from tests.conftest import test_database_url

    with (
        django_db_blocker.unblock(),
        running_server(test_database_url(), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0") as url,
    ):
        response = httpx.get(url + "/v1/system/health", timeout=30)
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "checks": {"database": "ok", "redis": "failing"}}


@pytest.mark.parametrize("path", PROTECTED)
def test_system_routes_refuse_anonymous_and_non_staff(path, make_user, client_for):
    assert client_for(None).get(path).status_code == 401
    assert client_for(make_user()).get(path).status_code == 403
    assert client_for(make_user(is_staff=True)).get(path).status_code == 200


@pytest.mark.parametrize("path", PROTECTED)
def test_system_routes_accept_the_metrics_token_bearer(path, client_for, settings):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    client = client_for(None)
    client.credentials(HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")
    assert client.get(path).status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Bearer wrong")
    assert client.get(path).status_code in (401, 403)
    settings.METRICS_TOKEN = ""  # an empty token never matches an empty bearer
    client.credentials(HTTP_AUTHORIZATION="Bearer ")
    assert client.get(path).status_code in (401, 403)


def test_an_unexpected_error_is_a_json_500_without_a_traceback(tenant, monkeypatch, settings):
    """A bug in our code (simulated by making a selector raise) must not leak details."""
    from rest_framework.test import APIClient

    import finance.api.views

    def broken(**kwargs):
        raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr(finance.api.views, "finance_summary", broken)
    assert settings.DEBUG is False
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=tenant.owner._credentials["HTTP_AUTHORIZATION"])
    response = client.get(tenant.url("/finance/summary"))
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}
    assert b"hunter2" not in response.content and b"Traceback" not in response.content
