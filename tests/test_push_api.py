"""Push routes (CONTRACT §11): VAPID key, devices, notification preferences; and the
registration's refusals (SSRF guard, kinds without credentials, malformed keys)."""

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from push.models import Device, NotificationPreference
from tests.push_support import (
    Browser,
    apns_signing_key,
    apply_env_to_settings,
    fcm_service_account,
    provider_env,
)

LOCAL_ENDPOINT = "http://127.0.0.1:9/push/abc"
FCM_TOKEN = "dGVzdC10b2tlbi0x:APA91bH" + "x" * 120
APNS_TOKEN = "a1" * 32


@pytest.fixture
def providers(settings: Any, tmp_path: Path) -> None:
    """FCM and APNs configured (their endpoints are never called here)."""
    fcm_file, _ = fcm_service_account(tmp_path, "http://127.0.0.1:9/token")
    apns_file, _ = apns_signing_key(tmp_path)
    env = provider_env(
        fcm_file=fcm_file, fcm_url="http://127.0.0.1:9", apns_file=apns_file, apns_url="http://127.0.0.1:9"
    )
    apply_env_to_settings(settings, env)


def webpush_body(endpoint: str = LOCAL_ENDPOINT) -> dict[str, Any]:
    return {"kind": "webpush", "subscription": Browser(endpoint).subscription}


# --- VAPID public key -------------------------------------------------------------------
def test_vapid_public_key_is_the_uncompressed_point_of_the_configured_key(tenant: Any, settings: Any) -> None:
    body = tenant.viewer.get("/v1/push/vapid-public-key").json()
    raw = base64.urlsafe_b64decode(body["public_key"] + "==")
    assert len(raw) == 65 and raw[0] == 4
    assert "=" not in body["public_key"]
    private = serialization.load_der_private_key(
        base64.urlsafe_b64decode(
            settings.PUSH_VAPID_PRIVATE_KEY + "=" * (-len(settings.PUSH_VAPID_PRIVATE_KEY) % 4)
        ),
        password=None,
    )
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert (
        private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        == raw
    )


def test_vapid_public_key_needs_a_token_and_says_404_when_not_configured(
    tenant: Any, client_for: Any, settings: Any
) -> None:
    assert client_for(None).get("/v1/push/vapid-public-key").status_code == 401
    settings.PUSH_VAPID_PRIVATE_KEY = ""
    assert tenant.viewer.get("/v1/push/vapid-public-key").status_code == 404


# --- devices ------------------------------------------------------------------------------
def test_register_webpush_then_again_is_200_with_the_same_device(tenant: Any) -> None:
    body = webpush_body()
    first = tenant.viewer.post("/v1/devices", body, format="json")
    assert first.status_code == 201, first.content
    assert set(first.json()) == {"id", "kind", "active", "created_at"}
    assert first.json()["kind"] == "webpush" and first.json()["active"] is True
    again = tenant.viewer.post("/v1/devices", body, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Device.objects.filter(address=LOCAL_ENDPOINT).count() == 1


def test_register_fcm_and_apns_tokens(tenant: Any, providers: None) -> None:
    fcm = tenant.viewer.post("/v1/devices", {"kind": "fcm", "token": FCM_TOKEN}, format="json")
    apns = tenant.viewer.post("/v1/devices", {"kind": "apns", "token": APNS_TOKEN.upper()}, format="json")
    assert (fcm.status_code, apns.status_code) == (201, 201)
    assert (
        tenant.viewer.post("/v1/devices", {"kind": "apns", "token": APNS_TOKEN}, format="json").status_code
        == 200
    )
    listed = tenant.viewer.get("/v1/devices").json()
    assert {d["id"] for d in listed["results"]} == {fcm.json()["id"], apns.json()["id"]}
    assert listed["next"] is None


def test_list_and_delete_only_the_callers_devices(tenant: Any) -> None:
    mine = tenant.viewer.post("/v1/devices", webpush_body(), format="json").json()
    theirs = tenant.manager.post("/v1/devices", webpush_body(LOCAL_ENDPOINT + "-2"), format="json").json()
    assert [d["id"] for d in tenant.viewer.get("/v1/devices").json()["results"]] == [mine["id"]]
    assert tenant.viewer.delete(f"/v1/devices/{theirs['id']}").status_code == 404
    assert Device.objects.filter(id=theirs["id"]).exists()
    assert tenant.viewer.delete(f"/v1/devices/{mine['id']}").status_code == 204
    assert not Device.objects.filter(id=mine["id"]).exists()
    assert tenant.viewer.delete(f"/v1/devices/{mine['id']}").status_code == 404


def test_a_token_registered_by_another_user_moves_to_them(tenant: Any) -> None:
    body = webpush_body()
    first = tenant.viewer.post("/v1/devices", body, format="json").json()
    moved = tenant.manager.post("/v1/devices", body, format="json")
    assert moved.status_code == 201 and moved.json()["id"] == first["id"]
    assert tenant.viewer.get("/v1/devices").json()["results"] == []
    assert Device.objects.get(id=first["id"]).user == tenant.users["manager"]


def test_devices_need_a_token(client_for: Any) -> None:
    anonymous = client_for(None)
    assert anonymous.get("/v1/devices").status_code == 401
    assert anonymous.post("/v1/devices", webpush_body(), format="json").status_code == 401


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://evil.example.com/push/1",  # not a push service
        "https://10.0.0.1/push",  # internal address
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://fcm.googleapis.com/fcm/send/abc",  # push service, but not https
        "https://fcm.googleapis.com:8443/fcm/send/abc",  # another port
        "https://user:pw@fcm.googleapis.com/fcm/send/abc",  # credentials
        "https://fcm.googleapis.com.evil.example.com/fcm/send/abc",  # suffix trick
        "https://evilfcm.googleapis.com/x",  # not the exact host
        "https://notify.windows.com/w/x",  # the wildcard covers subdomains only
        "http://127.0.0.2:9/push",  # loopback, but not listed
        "http://[::ffff:127.0.0.1]:9/push",  # an unlisted spelling of loopback
        "http://0.0.0.0:9/push",
        "ftp://127.0.0.1/push",
        "not a url",
        "https:///nohost",
        "https://fcm.googleapis.com/\x00",
        "https://fcm.googleapis.com/" + "a" * 2100,
    ],
)
def test_registration_refuses_an_endpoint_outside_the_allowed_hosts(tenant: Any, endpoint: str) -> None:
    response = tenant.viewer.post("/v1/devices", webpush_body(endpoint), format="json")
    assert response.status_code == 400, endpoint
    assert "endpoint" in response.json()["subscription"]
    assert not Device.objects.exists()


def test_the_public_push_services_are_allowed(tenant: Any, settings: Any) -> None:
    settings.PUSH_WEBPUSH_ALLOWED_HOSTS = ["fcm.googleapis.com", "*.notify.windows.com"]
    for endpoint in (
        "https://fcm.googleapis.com/fcm/send/abc",
        "https://wns2-par02p.notify.windows.com/w/?token=x",
    ):
        response = tenant.viewer.post("/v1/devices", webpush_body(endpoint), format="json")
        assert response.status_code == 201, response.content
    # loopback is allowed only when listed (the local stack lists it)
    assert tenant.viewer.post("/v1/devices", webpush_body(LOCAL_ENDPOINT), format="json").status_code == 400


def test_registration_refuses_a_kind_without_credentials(tenant: Any, settings: Any) -> None:
    settings.PUSH_FCM_CREDENTIALS_FILE = ""
    settings.PUSH_APNS_KEY_FILE = ""
    for body in ({"kind": "fcm", "token": FCM_TOKEN}, {"kind": "apns", "token": APNS_TOKEN}):
        response = tenant.viewer.post("/v1/devices", body, format="json")
        assert response.status_code == 400
        assert "not configured" in response.json()["kind"][0]
    settings.PUSH_VAPID_PRIVATE_KEY = ""
    assert tenant.viewer.post("/v1/devices", webpush_body(), format="json").status_code == 400
    settings.PUSH_VAPID_PRIVATE_KEY = "bm90LWEta2V5"  # set, but not a key
    assert tenant.viewer.post("/v1/devices", webpush_body(), format="json").status_code == 400
    assert not Device.objects.exists()


def test_registration_refuses_a_credentials_file_that_does_not_load(
    tenant: Any, providers: None, settings: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "service_account"}')
    settings.PUSH_FCM_CREDENTIALS_FILE = str(broken)
    assert (
        tenant.viewer.post("/v1/devices", {"kind": "fcm", "token": FCM_TOKEN}, format="json").status_code
        == 400
    )
    settings.PUSH_APNS_KEY_FILE = str(broken)
    assert (
        tenant.viewer.post("/v1/devices", {"kind": "apns", "token": APNS_TOKEN}, format="json").status_code
        == 400
    )


def _not_on_curve() -> str:
    return base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("keys", "field"),
    [
        ({"p256dh": "not base64 !!", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "p256dh"),
        ({"p256dh": "BAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "p256dh"),  # too short
        ({"p256dh": _not_on_curve(), "auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "p256dh"),
        ({"p256dh": None, "auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "p256dh"),
        ({"p256dh": 12, "auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "p256dh"),
        ({"auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "p256dh"),
        ({"p256dh": "VALID", "auth": "AAAA"}, "auth"),  # 3 bytes
        ({"p256dh": "VALID", "auth": "AAAAAAAAAAAAAAAAAAAAAAAA"}, "auth"),  # 18 bytes
        ({"p256dh": "VALID", "auth": "AAAAAAAAAAAAAAAAAAAAAA", "extra": "x"}, "extra"),
    ],
)
def test_registration_refuses_malformed_keys(tenant: Any, keys: dict[str, Any], field: str) -> None:
    body = webpush_body()
    good = body["subscription"]["keys"]
    body["subscription"]["keys"] = {k: (good["p256dh"] if v == "VALID" else v) for k, v in keys.items()}
    response = tenant.viewer.post("/v1/devices", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["subscription"]["keys"]
    assert not Device.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "fcm", "token": "short"},
        {"kind": "fcm", "token": "has spaces in it but is long enough"},
        {"kind": "fcm"},
        {"kind": "fcm", "token": 12345678901234567890123},
        {"kind": "apns", "token": "zz" * 32},
        {"kind": "apns", "token": "a1" * 31},
        {"kind": "apns", "token": "a1b"},
        {"kind": "apns", "subscription": Browser(LOCAL_ENDPOINT).subscription},
        {"kind": "webpush", "token": FCM_TOKEN},
        {"kind": "webpush"},
        {"kind": "sms", "token": FCM_TOKEN},
        {"kind": ["fcm"], "token": FCM_TOKEN},
        {"token": FCM_TOKEN},
        {"kind": "fcm", "token": FCM_TOKEN, "user_id": "someone"},
        [],
        "fcm",
    ],
)
def test_registration_refuses_bad_tokens_kinds_and_shapes(tenant: Any, providers: None, body: Any) -> None:
    response = tenant.viewer.post("/v1/devices", body, format="json")
    assert response.status_code == 400, response.content
    assert not Device.objects.exists()


def test_registration_refuses_malformed_json(tenant: Any) -> None:
    response = tenant.viewer.post("/v1/devices", b"{not json", content_type="application/json")
    assert response.status_code == 400


# --- preferences ----------------------------------------------------------------------------
def test_preferences_default_then_put_then_get(tenant: Any) -> None:
    url = tenant.url("/notification-preferences")
    assert tenant.viewer.get(url).json() == {
        "large_expense": {"enabled": False, "thresholds": {}},
        "sync": True,
    }
    body = {"large_expense": {"enabled": True, "thresholds": {"EUR": "1000", "USD": 250.5}}, "sync": False}
    put = tenant.viewer.put(url, body, format="json")
    assert put.status_code == 200, put.content
    expected = {
        "large_expense": {"enabled": True, "thresholds": {"EUR": "1000.00", "USD": "250.50"}},
        "sync": False,
    }
    assert put.json() == expected
    assert tenant.viewer.get(url).json() == expected
    # each member has their own
    assert tenant.manager.get(url).json()["large_expense"]["enabled"] is False
    assert NotificationPreference.objects.filter(org=tenant.org).count() == 1


def test_preferences_are_404_to_non_members_and_401_without_token(
    tenant: Any, other_tenant: Any, client_for: Any
) -> None:
    url = tenant.url("/notification-preferences")
    body = {"large_expense": {"enabled": True, "thresholds": {}}, "sync": True}
    assert other_tenant.owner.get(url).status_code == 404
    assert other_tenant.owner.put(url, body, format="json").status_code == 404
    assert client_for(None).get(url).status_code == 401
    assert (
        tenant.viewer.get(
            "/v1/orgs/00000000-0000-7000-8000-000000000000/notification-preferences"
        ).status_code
        == 404
    )
    assert not NotificationPreference.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"large_expense": {"enabled": True, "thresholds": {"EURO": "10.00"}}, "sync": True},
        {"large_expense": {"enabled": True, "thresholds": {"XXX": "10.00"}}, "sync": True},
        {"large_expense": {"enabled": True, "thresholds": {"EUR": "-1.00"}}, "sync": True},
        {"large_expense": {"enabled": True, "thresholds": {"EUR": "0"}}, "sync": True},
        {"large_expense": {"enabled": True, "thresholds": {"EUR": "1.001"}}, "sync": True},
        {"large_expense": {"enabled": True, "thresholds": {"EUR": "NaN"}}, "sync": True},
        {"large_expense": {"enabled": True, "thresholds": {"EUR": "1e400"}}, "sync": True},
        {"large_expense": {"enabled": True, "thresholds": {"EUR": None}}, "sync": True},
        {"large_expense": {"enabled": True, "thresholds": ["EUR"]}, "sync": True},
        {"large_expense": {"enabled": "yes", "thresholds": {}}, "sync": True},
        {"large_expense": {"enabled": 1, "thresholds": {}}, "sync": True},
        {"large_expense": {"enabled": True, "thresholds": {}}, "sync": "false"},
        {"large_expense": {"enabled": True}, "sync": True},
        {"large_expense": {"enabled": True, "thresholds": {}}},
        {"sync": True},
        {"large_expense": {"enabled": True, "thresholds": {}, "extra": 1}, "sync": True},
        {"large_expense": {"enabled": True, "thresholds": {}}, "sync": True, "org_id": "x"},
        {"large_expense": True, "sync": True},
    ],
)
def test_preferences_refuse_bad_input(tenant: Any, body: dict[str, Any]) -> None:
    response = tenant.viewer.put(tenant.url("/notification-preferences"), body, format="json")
    assert response.status_code == 400, response.content
    assert not NotificationPreference.objects.exists()


def test_every_push_route_is_in_the_schema(tenant: Any) -> None:
    schema = tenant.viewer.get("/v1/schema?format=json").json()
    paths = schema["paths"]
    assert {"/v1/push/vapid-public-key", "/v1/devices", "/v1/devices/{device_id}"} <= set(paths)
    assert set(paths["/v1/orgs/{org_id}/notification-preferences"]) >= {"get", "put"}
    # Plus what every write can answer (core/openapi.py): 413, 415, 503.
    assert set(paths["/v1/devices"]["post"]["responses"]) == {
        "200",
        "201",
        "400",
        "401",
        "413",
        "415",
        "429",
        "503",
    }


def test_revoking_all_tokens_deactivates_only_that_users_devices(tenant: Any, providers: None) -> None:
    mine = [
        tenant.viewer.post("/v1/devices", webpush_body(), format="json").json()["id"],
        tenant.viewer.post("/v1/devices", {"kind": "fcm", "token": FCM_TOKEN}, format="json").json()["id"],
    ]
    theirs = tenant.manager.post("/v1/devices", webpush_body(LOCAL_ENDPOINT + "-2"), format="json").json()[
        "id"
    ]
    assert tenant.viewer.delete("/v1/auth/tokens").status_code == 204
    assert list(Device.objects.filter(id__in=mine).values_list("active", flat=True)) == [False, False]
    assert all(Device.objects.get(id=i).deactivated_at is not None for i in mine)
    assert Device.objects.get(id=theirs).active is True
    # One token revoked (DELETE /v1/auth/token) names no device: the devices stay.
    assert tenant.manager.delete("/v1/auth/token").status_code == 204
    assert Device.objects.get(id=theirs).active is True
