"""Brute-force protection (CONTRACT §1, §7): failed logins counted in Redis per username
and per client address across server processes, 429 with Retry-After once over the
limit (even with the right password), the same on /admin/login/, open when Redis is
down; and the per-token request rate limit."""

import time
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from rest_framework.test import APIClient

from tests import conftest
from tests.live_server import running_servers
from tests.replica_support import wait_until

PASSWORD = "s3cret-pass!"
WINDOW = 20  # AUTH_FAILURE_WINDOW_SECONDS for the live servers (a real PBKDF2 login takes ~1 s here)


def api_login(username: str, password: str, address: str = "10.1.0.1") -> tuple[int, Any, Mapping[str, str]]:
    response = APIClient(REMOTE_ADDR=address).post(
        "/v1/auth/token", {"username": username, "password": password}, format="json"
    )
    return response.status_code, response.json(), response.headers


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_five_failures_lock_the_username_across_two_server_processes_until_the_window_ends(
    make_user, settings
):
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.PBKDF2PasswordHasher"
    ]  # what the servers verify
    make_user("night-manager", password=PASSWORD)
    env = {"AUTH_FAILURE_WINDOW_SECONDS": str(WINDOW), "WEB_CONCURRENCY": "1"}
    with running_servers(conftest.test_database_url(), 2, kind="wsgi", **env) as servers:

        def attempt(n: int, password: str) -> httpx.Response:
            url = servers[n % 2].url + "/v1/auth/token"
            return httpx.post(url, json={"username": "night-manager", "password": password}, timeout=30)

        assert [attempt(n, "wrong").status_code for n in range(5)] == [400] * 5

        locked = attempt(5, PASSWORD)
        assert locked.status_code == 429, locked.text
        assert 1 <= int(locked.headers["Retry-After"]) <= WINDOW
        assert "token" not in locked.json()
        assert attempt(6, PASSWORD).status_code == 429  # the other process agrees

        # The window ends: the right password works again, on either process.
        wait_until(lambda: attempt(7, PASSWORD).status_code == 200, timeout=WINDOW + 20, interval=0.5)
        assert attempt(8, PASSWORD).status_code == 200


@pytest.mark.django_db
def test_a_success_clears_the_usernames_failures(make_user):
    make_user("olga", password=PASSWORD)
    assert [api_login("olga", "wrong")[0] for _ in range(4)] == [400] * 4
    assert api_login("olga", PASSWORD)[0] == 200
    assert [api_login("olga", "wrong")[0] for _ in range(4)] == [400] * 4
    assert api_login("olga", PASSWORD)[0] == 200


@pytest.mark.django_db
def test_twenty_failures_from_one_address_lock_it_for_every_username(make_user, settings):
    make_user("victim", password=PASSWORD)
    address = "10.2.0.9"
    for n in range(20):  # 20 different names: no username reaches its own limit
        assert api_login(f"guess-{n}", "wrong", address)[0] == 400

    status, _, headers = api_login("victim", PASSWORD, address)
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= settings.AUTH_FAILURE_WINDOW_SECONDS
    assert api_login("victim", PASSWORD, "10.2.0.10")[0] == 200  # another address is not affected


@pytest.mark.django_db
def test_the_client_address_comes_from_the_trusted_proxy_only(make_user, settings):
    """Behind one proxy (Varnish) the address is the one it appended; entries a client
    put in X-Forwarded-For itself cannot dodge the per-address count."""
    settings.TRUSTED_PROXY_COUNT = 1
    make_user("pat", password=PASSWORD)
    for n in range(20):
        forged = f"203.0.113.{n}, 198.51.100.7"  # the client's own entry varies; the proxy's does not
        response = APIClient(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=forged).post(
            "/v1/auth/token", {"username": f"x{n}", "password": "wrong"}, format="json"
        )
        assert response.status_code == 400
    blocked = APIClient(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.7").post(
        "/v1/auth/token", {"username": "pat", "password": PASSWORD}, format="json"
    )
    assert blocked.status_code == 429


@pytest.mark.django_db
def test_admin_login_is_throttled_the_same_way(make_user, client):
    admin = make_user("boss", is_staff=True, password=PASSWORD)
    assert admin.is_staff

    def admin_login(password: str) -> int:
        return client.post(
            "/admin/login/?next=/admin/", {"username": "boss", "password": password}, REMOTE_ADDR="10.3.0.1"
        ).status_code

    assert [admin_login("wrong") for _ in range(5)] == [200] * 5  # the form again, with an error
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "boss", "password": PASSWORD}, REMOTE_ADDR="10.3.0.1"
    )
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert client.get("/admin/").status_code == 302  # not logged in


@pytest.mark.django_db
def test_admin_and_api_share_the_usernames_count(make_user, client):
    make_user("shared", is_staff=True, password=PASSWORD)
    for _ in range(3):
        client.post("/admin/login/", {"username": "shared", "password": "wrong"}, REMOTE_ADDR="10.4.0.1")
    for _ in range(2):
        assert api_login("shared", "wrong", "10.4.0.2")[0] == 400
    assert api_login("shared", PASSWORD, "10.4.0.3")[0] == 429


@pytest.mark.django_db
def test_with_redis_unreachable_logins_and_api_calls_go_on_unthrottled(make_user, settings, client_for):
    user = make_user("rita", password=PASSWORD)
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    settings.REDIS_CLUSTER_NODES = []  # this one node, not the cluster
    settings.API_RATE_LIMIT_PER_MINUTE = 1
    started = time.monotonic()
    statuses = [api_login("rita", "wrong")[0] for _ in range(8)]
    assert statuses == [400] * 8  # never 429, never 500
    assert api_login("rita", PASSWORD)[0] == 200
    api = client_for(user)
    assert [api.get("/v1/orgs").status_code for _ in range(3)] == [200] * 3
    assert time.monotonic() - started < 10  # the breaker keeps it from paying a timeout each time


@pytest.mark.django_db
def test_the_per_token_rate_limit_is_429_with_retry_after_and_per_token(make_user, client_for, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 5
    _wait_away_from_a_minute_boundary()
    user = make_user("busy", password=PASSWORD)
    first = client_for(user)
    assert [first.get("/v1/orgs").status_code for _ in range(5)] == [200] * 5
    limited = first.get("/v1/orgs")
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 60
    _, body, _ = api_login("busy", PASSWORD)
    other_device = APIClient()
    other_device.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    assert other_device.get("/v1/orgs").status_code == 200  # counted per token


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_the_rate_limit_is_shared_by_server_processes(make_user):
    user = make_user()
    from tests.tokens import token_for

    headers = {"Authorization": f"Token {token_for(user)}"}
    env = {"API_RATE_LIMIT_PER_MINUTE": "6", "WEB_CONCURRENCY": "1"}
    with running_servers(conftest.test_database_url(), 2, kind="wsgi", **env) as servers:
        _wait_away_from_a_minute_boundary()
        statuses = [httpx.get(servers[n % 2].url + "/v1/orgs", headers=headers).status_code for n in range(8)]
    assert statuses == [200] * 6 + [429] * 2


def _wait_away_from_a_minute_boundary() -> None:
    """The limit counts per clock minute: keep a short test inside one."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
