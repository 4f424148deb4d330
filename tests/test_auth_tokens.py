"""API tokens (CONTRACT §1): one per login, stored only as a digest, expiring,
revocable one by one or all at once; a password change revokes all."""

import hashlib
import importlib
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.replica_support import wait_until

PASSWORD = "s3cret-pass!"


def login(username: str, password: str = PASSWORD) -> "tuple[int, dict]":
    response = APIClient().post("/v1/auth/token", {"username": username, "password": password}, format="json")
    return response.status_code, response.json()


def with_token(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def status_with(token: str) -> int:
    return with_token(token).get("/v1/orgs").status_code


@pytest.mark.django_db
def test_two_logins_give_two_tokens_and_revoking_one_leaves_the_other(make_user):
    make_user("alice", password=PASSWORD)
    (status_a, first), (status_b, second) = login("alice"), login("alice")
    assert status_a == status_b == 200
    assert set(first) == {"token", "expires_at"}
    assert first["token"] != second["token"]
    assert status_with(first["token"]) == status_with(second["token"]) == 200

    assert with_token(first["token"]).delete("/v1/auth/token").status_code == 204

    assert status_with(first["token"]) == 401
    assert status_with(second["token"]) == 200
    assert with_token(first["token"]).delete("/v1/auth/token").status_code == 401


@pytest.mark.django_db
def test_the_token_expires_after_the_configured_ttl(make_user, settings):
    make_user("bob", password=PASSWORD)
    settings.AUTH_TOKEN_TTL_SECONDS = 30 * 24 * 3600
    _, body = login("bob")
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert abs(expires_at - (datetime.now(tz=UTC) + timedelta(days=30))) < timedelta(minutes=1)

    settings.AUTH_TOKEN_TTL_SECONDS = 1
    _, short = login("bob")
    assert status_with(short["token"]) == 200
    wait_until(lambda: status_with(short["token"]) == 401, timeout=15)
    assert status_with(body["token"]) == 200  # the long-lived one is untouched


@pytest.mark.django_db
def test_revoke_all_stops_every_token_of_the_caller_only(make_user):
    make_user("carol", password=PASSWORD)
    make_user("dave", password=PASSWORD)
    tokens = [login("carol")[1]["token"] for _ in range(3)]
    other = login("dave")[1]["token"]

    assert with_token(tokens[0]).delete("/v1/auth/tokens").status_code == 204

    assert [status_with(t) for t in tokens] == [401, 401, 401]
    assert status_with(other) == 200
    assert not AuthToken.objects.filter(user__username="carol").exists()


@pytest.mark.django_db
def test_a_password_change_revokes_every_token(make_user):
    user = make_user("erin", password=PASSWORD)
    tokens = [login("erin")[1]["token"] for _ in range(2)]

    user.set_password("another-pass-99")
    user.save()

    assert [status_with(t) for t in tokens] == [401, 401]
    assert login("erin", "another-pass-99")[0] == 200


@pytest.mark.django_db
def test_a_password_change_in_admin_revokes_every_token(make_user, client):
    user = make_user("frank", password=PASSWORD)
    token = login("frank")[1]["token"]
    client.force_login(_superuser(make_user))

    response = client.post(
        f"/admin/accounts/user/{user.pk}/password/",
        {"password1": "brand-new-pass-77", "password2": "brand-new-pass-77", "usable_password": "true"},
    )

    assert response.status_code == 302, response.content[:500]
    assert status_with(token) == 401


def _superuser(make_user):
    admin = make_user(is_staff=True)
    admin.is_superuser = True
    admin.save()
    return admin


@pytest.mark.django_db
def test_a_deactivated_user_loses_every_token(make_user):
    user = make_user("gina", password=PASSWORD)
    token = login("gina")[1]["token"]
    user.is_active = False
    user.save()
    assert status_with(token) == 401
    assert not AuthToken.objects.filter(user=user).exists()


@pytest.mark.django_db
def test_tokens_are_stored_only_as_sha512_digests(make_user):
    make_user("hank", password=PASSWORD)
    token = login("hank")[1]["token"]
    row = AuthToken.objects.get(user__username="hank")
    assert row.digest == hashlib.sha512(token.encode()).hexdigest()
    assert token not in (row.digest, row.token_key)
    assert len(row.token_key) < len(token) // 4  # an index prefix, not the secret


@pytest.mark.django_db(transaction=True)
def test_pg_dump_of_the_database_contains_no_issued_token(make_user):
    make_user("ivy", password=PASSWORD)
    tokens = [login("ivy")[1]["token"] for _ in range(3)]
    pg_dump = shutil.which("pg_dump") or "/usr/lib/postgresql/15/bin/pg_dump"
    params = connection.settings_dict
    dump = subprocess.run(
        [pg_dump, "-h", params["HOST"], "-p", str(params["PORT"]), "-U", params["USER"], params["NAME"]],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout.decode()
    assert "knox_authtoken" in dump  # the table was dumped, with its rows
    assert hashlib.sha512(tokens[0].encode()).hexdigest() in dump
    for token in tokens:
        assert token not in dump
        assert token[:20] not in dump


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [
        "Token " + "a" * 5000,
        "Token not-a-real-token",
        "Token",
        "Token a b",
        "Bearer abc",
        "Token ünïcode",
    ],
    ids=["huge", "unknown", "empty", "spaces", "other-scheme", "non-ascii"],
)
def test_bad_tokens_are_401_never_500(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header.encode("utf-8").decode("latin-1"))
    assert client.get("/v1/orgs").status_code == 401


@pytest.mark.django_db
def test_a_login_with_bad_input_is_400(make_user):
    make_user("jack", password=PASSWORD)
    body: object
    for body in ({}, {"username": "jack"}, {"username": "jack", "password": PASSWORD, "extra": 1}, []):
        response = APIClient().post("/v1/auth/token", body, format="json")
        assert response.status_code == 400, body
        assert "token" not in response.json()
    assert login("jack", "wrong")[0] == 400
    assert login("nobody-here", "x")[0] == 400
    assert not AuthToken.objects.exists()


@pytest.mark.django_db
def test_an_unknown_username_costs_as_much_as_a_known_one(make_user, settings):
    """Django's ModelBackend hashes the password for unknown users too; checked with
    the real PBKDF2 hasher (the suite's fast MD5 one would hide a difference)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    make_user("kate", password=PASSWORD)

    def median_seconds(username: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            assert login(username, "wrong-password")[0] == 400
            times.append(time.perf_counter() - start)
        return sorted(times)[1]

    known, unknown = median_seconds("kate"), median_seconds("no-such-user-at-all")
    assert unknown > 0.3 * known, (known, unknown)


@pytest.mark.django_db
def test_a_drf_token_from_before_the_migration_keeps_working(make_user, settings):
    """The data migration (accounts 0002) turns each plaintext DRF token into a knox
    digest and drops the old table; replayed here on a table shaped like DRF's."""
    user = make_user()
    legacy = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamptz NOT NULL,"
            " user_id uuid NOT NULL)"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, now(), %s)", [legacy, user.pk])
        migration = importlib.import_module("accounts.migrations.0002_tokens_hashed")
        cursor.execute(migration.migration_sql(ttl_seconds=3600))
        cursor.execute("SELECT to_regclass('authtoken_token')")
        assert cursor.fetchone()[0] is None

    assert status_with(legacy) == 200
    row = AuthToken.objects.get(user=user)
    assert row.digest == hashlib.sha512(legacy.encode()).hexdigest()
    assert row.expiry is not None
