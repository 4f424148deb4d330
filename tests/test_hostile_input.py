"""Hostile input (issue 12, point 6; CONTRACT §2, §5, §7): every one gets its 4xx and
writes nothing; a hung replica never holds a request past the watchdog."""

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis
from django.conf import settings as django_settings
from rest_framework.test import APIClient
from websockets.asyncio.client import connect
from websockets.typing import Origin

from finance.models import Expense
from replicas.middleware import org_reader_id
from tests.realtime_client import open_socket, org_url
from tests.tokens import token_for

ROOT = Path(__file__).resolve().parent.parent


# --- duplicate keys, body size ---------------------------------------------------------
@pytest.mark.django_db
def test_duplicate_json_keys_are_400_and_write_nothing(tenant):
    payload = json.dumps(tenant.entry_payload())
    duplicated = payload[:-1] + ', "amount": "99999.00"}'
    response = tenant.manager.generic(
        "POST", tenant.url("/expenses"), duplicated, content_type="application/json"
    )
    assert response.status_code == 400
    assert "duplicate key" in response.json()["detail"]
    nested = '{"name": "A", "name": "B"}'
    assert (
        tenant.owner.generic(
            "POST", tenant.url("/properties"), nested, content_type="application/json"
        ).status_code
        == 400
    )
    assert Expense.objects.count() == 0


@pytest.mark.django_db
def test_a_json_body_over_max_json_body_bytes_is_413_and_writes_nothing(tenant, settings):
    settings.MAX_JSON_BODY_BYTES = 2000
    big = tenant.entry_payload(description="x" * 2500)
    response = tenant.manager.post(tenant.url("/expenses"), big, format="json")
    assert response.status_code == 413
    assert response.json()["detail"]
    fits = tenant.entry_payload(description="y" * 500)
    assert tenant.manager.post(tenant.url("/expenses"), fits, format="json").status_code == 201
    assert Expense.objects.count() == 1


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_1_mib_json_write_is_413_on_the_wire(live_wsgi, tenant, chunked):
    body = json.dumps(tenant.entry_payload(description="z" * (1024 * 1024))).encode()
    headers = {
        "Authorization": f"Token {token_for(tenant.users['manager'])}",
        "Content-Type": "application/json",
    }
    content = iter([body[i : i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    response = httpx.post(live_wsgi + tenant.url("/expenses"), content=content, headers=headers, timeout=60)
    assert response.status_code == 413
    assert response.json()["detail"]
    assert Expense.objects.filter(org=tenant.org).count() == 0


# --- cursors ---------------------------------------------------------------------------
def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.django_db
def test_forged_or_malformed_cursors_are_400_never_500(tenant):
    for _ in range(3):
        assert (
            tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json").status_code
            == 201
        )
    first = tenant.viewer.get(tenant.url("/expenses"), {"page_size": 1}).json()
    cursor = parse_qs(urlsplit(first["next"]).query)["cursor"][0]
    assert tenant.viewer.get(tenant.url("/expenses"), {"page_size": 1, "cursor": cursor}).status_code == 200

    members_cursor = tenant.viewer.get(tenant.url("/members"), {"page_size": 1}).json()["next"]
    foreign = parse_qs(urlsplit(members_cursor).query)["cursor"][0]
    tampered = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
    forged = [
        "not-a-cursor",
        _b64([["str", "abc"], ["str", "def"]]),  # the old unsigned shape, with wrong types
        _b64([["date", "2026-01-01"], ["uuid", "00000000-0000-0000-0000-000000000000"]]),
        tampered,
        foreign,  # a real cursor of another list
        "x" * 5000,
        "%00%ff",
        _b64({"a": 1}),
    ]
    for bad in forged:
        response = tenant.viewer.get(tenant.url("/expenses"), {"cursor": bad})
        assert response.status_code == 400, (bad, response.content)
        assert response.json() == {"cursor": ["Invalid cursor."]}
    for route in ("/members", "/properties"):
        assert tenant.viewer.get(tenant.url(route), {"cursor": "forged"}).status_code == 400
    assert tenant.viewer.get("/v1/orgs", {"cursor": _b64([["str", "x"]])}).status_code == 400


# --- read-your-writes positions --------------------------------------------------------
def _stored_org_position(org_id: object) -> bytes | str | None:
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    keys = list(client.scan_iter(match=f"replicas:pos:*:{{{org_reader_id(str(org_id))}}}"))
    return client.get(keys[0]) if keys else None


@pytest.mark.django_db(transaction=True)
def test_only_committed_writes_of_authenticated_callers_record_a_position(tenant, settings):
    settings.USE_READ_REPLICAS = True
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    for key in client.scan_iter(match=f"replicas:pos:*:{{{org_reader_id(str(tenant.org.id))}}}"):
        client.delete(key)
    keyed: dict[str, Any] = {"HTTP_IDEMPOTENCY_KEY": "hostile-1"}  # **extra, as the stub types it

    anonymous = APIClient().post(tenant.url("/expenses"), tenant.entry_payload(), format="json", **keyed)
    assert anonymous.status_code == 401
    assert "X-DB-Position" not in anonymous.headers
    refused = tenant.viewer.post(tenant.url("/expenses"), tenant.entry_payload(), format="json", **keyed)
    assert refused.status_code == 403
    invalid = tenant.manager.post(tenant.url("/expenses"), {"amount": "-1"}, format="json", **keyed)
    assert invalid.status_code == 400
    assert _stored_org_position(tenant.org.id) is None
    assert Expense.objects.count() == 0

    written = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json", **keyed)
    assert written.status_code == 201
    assert written.headers["X-DB-Position"]
    assert _stored_org_position(tenant.org.id) is not None


# --- websocket Origin ------------------------------------------------------------------
@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_websocket_upgrades_from_other_origins_are_closed_4403(realtime_servers, tenant):
    ws = realtime_servers[0].ws_url
    token = token_for(tenant.users["viewer"])

    async def close_code(origin: str | None) -> int | None:
        headers = {"Authorization": f"Token {token}"}
        sent = None if origin is None else Origin(origin)
        async with connect(org_url(ws, tenant.org.id), additional_headers=headers, origin=sent) as socket:
            try:
                message = json.loads(await asyncio.wait_for(socket.recv(), 10))
            except Exception:
                await socket.wait_closed()
                return socket.close_code
            assert message["type"] == "ready"
            return None

    assert asyncio.run(close_code("https://evil.example")) == 4403
    assert asyncio.run(close_code("http://localhost:3000.evil.example")) == 4403
    assert asyncio.run(close_code("null")) == 4403
    assert asyncio.run(close_code("http://localhost:3000")) is None  # in CORS_ALLOWED_ORIGINS
    own = realtime_servers[0].url  # http://127.0.0.1:PORT
    assert asyncio.run(close_code(own)) is None  # a page this service served: same origin
    other_port = own.rsplit(":", 1)[0] + ":1"
    assert asyncio.run(close_code(other_port)) == 4403  # same host, another origin
    assert asyncio.run(close_code(None)) is None  # not a browser: no Origin

    async def no_origin() -> None:
        socket, _ = await open_socket(ws, tenant.org.id, token)
        await socket.close()

    asyncio.run(no_origin())


# --- the replica position probe under the watchdog ------------------------------------
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_hung_replica_and_a_reader_ahead_of_it_never_hold_the_request_past_the_watchdog(
    replicas_live, tenant, client_for, settings
):
    """The reader's position is ahead of what the router last saw the replicas replay,
    so it asks the replicas themselves: frozen ones must not hang that probe."""
    settings.REPLICA_READ_TIMEOUT_MS = 1000
    settings.REPLICA_HEALTH_CHECK_INTERVAL = 600000  # the checker must not take them out first
    viewer = client_for(tenant.users["viewer"])
    assert viewer.get(tenant.url("/expenses")).status_code == 200
    ahead = replicas_live.sql("default", "SELECT pg_current_wal_insert_lsn() + 1000000")[0]

    with replicas_live.replay_paused("replica1"), replicas_live.replay_paused("replica2"):
        started = time.monotonic()
        paused = viewer.get(tenant.url("/expenses"), HTTP_X_DB_POSITION=str(ahead))
        assert paused.status_code == 200
        assert paused["X-DB-Read-From"] == "default"  # neither paused replica has the position
        assert time.monotonic() - started < 12

    with replicas_live.server_hung("replica1"), replicas_live.server_hung("replica2"):
        started = time.monotonic()
        response = viewer.get(tenant.url("/expenses"), HTTP_X_DB_POSITION=str(ahead))
        elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response["X-DB-Read-From"] == "default"
    # Two probes cut at 1 s each plus a refused reconnect: far below the 30 s a request
    # would otherwise wait on a frozen server.
    assert elapsed < 12, elapsed


# --- SECRET_KEY and .env -------------------------------------------------------------
def _start_django(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env=os.environ | {"DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_service_refuses_the_development_secret_key_without_debug():
    refused = _start_django(SECRET_KEY=django_settings.DEVELOPMENT_SECRET_KEY, DEBUG="false")
    assert refused.returncode != 0
    assert "SECRET_KEY" in refused.stderr
    assert _start_django(SECRET_KEY=django_settings.DEVELOPMENT_SECRET_KEY, DEBUG="true").returncode == 0
    assert _start_django(SECRET_KEY="a" * 60, DEBUG="false").returncode == 0


def test_the_local_stack_writes_a_random_secret_key_to_a_private_env_file():
    env_file = ROOT / ".env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert len(values["SECRET_KEY"]) >= 50
    assert values["SECRET_KEY"] != django_settings.DEVELOPMENT_SECRET_KEY


# --- values of the wrong JSON type, undeclared methods, empty cursors (found by schemathesis)
@pytest.mark.django_db
def test_values_of_the_wrong_json_type_are_400_not_coerced(tenant):
    from tenancy.models import Organization

    orgs = Organization.objects.count()
    response = tenant.owner.post("/v1/orgs", {"name": 0}, format="json")
    assert response.status_code == 400 and "JSON string" in response.json()["name"][0]
    pull = tenant.viewer.post(tenant.url("/sync/pull"), {"client_id": False}, format="json")
    assert pull.status_code == 400 and "client_id" in pull.json()  # not UUID(int=0)
    role = tenant.owner.patch(tenant.url(f"/members/{tenant.users['viewer'].pk}"), {"role": 1}, format="json")
    assert role.status_code == 400
    assert Organization.objects.count() == orgs


@pytest.mark.django_db
def test_an_undeclared_method_with_an_idempotency_key_is_405_not_a_key_claim(tenant):
    member = tenant.url(f"/members/{tenant.users['viewer'].pk}")
    for _ in range(2):  # the second is not a 422 "key used for another request" either
        response = tenant.owner.put(member, {"role": "owner"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        assert response.status_code == 405


@pytest.mark.django_db
def test_an_empty_cursor_is_400(tenant):
    response = tenant.owner.get(tenant.url("/expenses"), {"cursor": ""})
    assert response.status_code == 400 and "cursor" in response.json()
    assert tenant.owner.get(tenant.url("/expenses")).status_code == 200
