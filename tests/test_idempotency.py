"""CONTRACT §3 in process, against the real Postgres and the stack's Redis: the header's
rules, replays, mismatches, scopes, PATCH/DELETE, org creation, expiry and counters."""

import time
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from prometheus_client import REGISTRY

from finance.models import Expense
from idempotency.identity import IdempotencyScope
from idempotency.models import IdempotencyRecord
from idempotency.redis_fast_path import fast_path
from tenancy.models import Organization
from tests.redis_wire import written_together

pytestmark = pytest.mark.django_db


def post(tenant, key=None, client=None, kind="expenses", **payload):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    client = client or tenant.manager
    return client.post(tenant.url(f"/{kind}"), tenant.entry_payload(**payload), format="json", **headers)


def counter(outcome):
    return REGISTRY.get_sample_value("idempotency_requests_total", {"outcome": outcome}) or 0.0


def forget_cached_response(tenant, user_role, key):
    """Drop the Redis copy, as a flush or eviction would: Postgres must still answer."""
    scope = IdempotencyScope.of(org_id=tenant.org.id, user_id=tenant.users[user_role].id, key=key)
    fast_path()._client.delete(scope.redis_key())


def test_without_the_header_a_write_runs_normally_every_time(tenant):
    assert post(tenant).status_code == 201
    assert post(tenant).status_code == 201
    assert Expense.objects.filter(org=tenant.org).count() == 2
    assert IdempotencyRecord.objects.count() == 0


def test_when_keys_are_required_a_write_without_one_is_400_and_writes_nothing(tenant, settings):
    settings.IDEMPOTENCY_REQUIRED = True
    invalid_before = counter("invalid")
    response = post(tenant)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["detail"]
    assert Expense.objects.count() == 0
    assert counter("invalid") == invalid_before + 1
    assert tenant.viewer.get(tenant.url("/expenses")).status_code == 200  # reads need no key
    assert post(tenant, key="k-required").status_code == 201


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "clé", "tab\there", "bell\x07", "del\x7f"],
    ids=["empty", "256-chars", "non-ascii", "tab", "control", "delete"],
)
def test_a_key_that_is_not_1_to_255_printable_ascii_is_400_and_writes_nothing(tenant, key):
    response = post(tenant, key=key)
    assert response.status_code == 400, response.content
    assert "Idempotency-Key" in response.json()["detail"]
    assert Expense.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0


@pytest.mark.parametrize("key", ["a", "x" * 255, "with spaces ~!@#$%^&*()"])
def test_keys_of_1_to_255_printable_ascii_are_accepted(tenant, key):
    assert post(tenant, key=key).status_code == 201
    assert post(tenant, key=key).headers["Idempotent-Replayed"] == "true"
    assert Expense.objects.count() == 1


@pytest.mark.parametrize("from_postgres", [False, True], ids=["redis-cache", "postgres"])
def test_a_replay_returns_the_stored_status_and_exact_bytes_and_writes_nothing(tenant, from_postgres):
    first = post(tenant, key="replay-1")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    row = Expense.objects.get(org=tenant.org)
    if from_postgres:
        forget_cached_response(tenant, "manager", "replay-1")

    again = post(tenant, key="replay-1")
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Expense.objects.filter(org=tenant.org).count() == 1
    row_after = Expense.objects.get(org=tenant.org)
    assert (row_after.id, row_after.updated_at) == (row.id, row.updated_at)  # no service ran
    assert IdempotencyRecord.objects.count() == 1


def test_the_same_key_with_a_different_body_or_path_is_422_and_writes_nothing(tenant):
    assert post(tenant, key="k1").status_code == 201
    mismatches_before = counter("mismatch")
    different_amount = post(tenant, key="k1", amount="99.00")
    assert different_amount.status_code == 422
    assert "different request" in different_amount.json()["detail"]
    assert post(tenant, key="k1", kind="revenues").status_code == 422  # same body, other path
    forget_cached_response(tenant, "manager", "k1")
    assert post(tenant, key="k1", amount="98.00").status_code == 422  # Postgres alone says so too
    assert Expense.objects.count() == 1
    assert tenant.org.id and not tenant.viewer.get(tenant.url("/revenues")).json()["results"]
    assert counter("mismatch") == mismatches_before + 3


def test_a_reordered_json_object_is_the_same_request(tenant):
    body = tenant.entry_payload()
    first = tenant.manager.post(tenant.url("/expenses"), body, format="json", HTTP_IDEMPOTENCY_KEY="order")
    reordered = dict(reversed(list(body.items())))
    again = tenant.manager.post(
        tenant.url("/expenses"), reordered, format="json", HTTP_IDEMPOTENCY_KEY="order"
    )
    assert again.status_code == 201
    assert again.content == first.content
    assert Expense.objects.count() == 1


def test_another_user_or_another_org_with_the_same_key_runs_on_its_own(tenant, other_tenant):
    mine = post(tenant, key="shared-key")
    colleague = post(tenant, key="shared-key", client=tenant.owner)
    elsewhere = post(other_tenant, key="shared-key")
    assert [r.status_code for r in (mine, colleague, elsewhere)] == [201, 201, 201]
    for response in (colleague, elsewhere):
        assert "Idempotent-Replayed" not in response.headers
        assert response.json()["id"] != mine.json()["id"]
    assert colleague.json()["created_by"] == str(tenant.users["owner"].id)
    assert Expense.objects.filter(org=tenant.org).count() == 2
    assert Expense.objects.filter(org=other_tenant.org).count() == 1


def test_a_patch_retried_with_its_key_applies_once(tenant):
    entry = post(tenant).json()
    url = tenant.url(f"/expenses/{entry['id']}")
    first = tenant.manager.patch(url, {"amount": "20.00"}, format="json", HTTP_IDEMPOTENCY_KEY="p1")
    assert first.status_code == 200
    # Someone else changes it since; a retry of the first PATCH must not undo that.
    assert tenant.owner.patch(url, {"amount": "30.00"}, format="json").status_code == 200
    retry = tenant.manager.patch(url, {"amount": "20.00"}, format="json", HTTP_IDEMPOTENCY_KEY="p1")
    assert retry.status_code == 200
    assert retry.content == first.content
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert str(Expense.objects.get(id=entry["id"]).amount) == "30.00"


def test_a_delete_retried_with_its_key_applies_once_and_replays_204(tenant):
    entry = post(tenant).json()
    url = tenant.url(f"/expenses/{entry['id']}")
    first = tenant.manager.delete(url, HTTP_IDEMPOTENCY_KEY="d1")
    assert first.status_code == 204
    retry = tenant.manager.delete(url, HTTP_IDEMPOTENCY_KEY="d1")
    assert retry.status_code == 204
    assert retry.content == b""
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "Content-Type" not in retry.headers
    assert tenant.manager.delete(url).status_code == 404  # without the key: it is gone
    assert not Expense.objects.filter(id=entry["id"]).exists()


def test_org_creation_is_idempotent_per_user(make_user, client_for):
    alice, bob = client_for(make_user()), client_for(make_user())
    first = alice.post("/v1/orgs", {"name": "Seaside"}, format="json", HTTP_IDEMPOTENCY_KEY="org-1")
    again = alice.post("/v1/orgs", {"name": "Seaside"}, format="json", HTTP_IDEMPOTENCY_KEY="org-1")
    other = bob.post("/v1/orgs", {"name": "Seaside"}, format="json", HTTP_IDEMPOTENCY_KEY="org-1")
    renamed = alice.post("/v1/orgs", {"name": "Hillside"}, format="json", HTTP_IDEMPOTENCY_KEY="org-1")
    assert (first.status_code, again.status_code, other.status_code) == (201, 201, 201)
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.json()["id"] != first.json()["id"]
    assert renamed.status_code == 422
    assert Organization.objects.filter(name="Seaside").count() == 2


def test_a_failed_attempt_keeps_nothing_and_the_key_stays_free(tenant):
    rolled_back_before = counter("rolled_back")
    refused = post(tenant, key="fix-me", amount="-1")
    assert refused.status_code == 400
    assert IdempotencyRecord.objects.count() == 0
    fixed = post(tenant, key="fix-me")  # the corrected request with the same key runs
    assert fixed.status_code == 201
    assert "Idempotent-Replayed" not in fixed.headers
    assert Expense.objects.count() == 1
    assert counter("rolled_back") == rolled_back_before + 1


def test_auth_and_membership_refusals_come_first_and_keep_nothing(tenant, other_tenant, client_for):
    assert post(tenant, key="k", client=client_for(None)).status_code == 401
    assert post(tenant, key="k", client=other_tenant.manager).status_code == 404
    assert post(tenant, key="k", client=tenant.viewer).status_code == 403
    assert IdempotencyRecord.objects.count() == 0
    assert post(tenant, key="k").status_code == 201


def test_records_never_hold_the_key_the_body_or_the_token_in_clear(tenant):
    key = "secret-looking-key-123"
    post(tenant, key=key)
    record = IdempotencyRecord.objects.get()
    stored = b"".join(bytes(v) if isinstance(v, memoryview | bytes) else str(v).encode() for v in (
        record.key_hash, record.fingerprint, record.org_id, record.user_id,
    ))  # fmt: skip
    assert key.encode() not in stored
    assert len(bytes(record.key_hash)) == 32
    assert len(bytes(record.fingerprint)) == 32
    token = tenant.manager._credentials["HTTP_AUTHORIZATION"].split()[1]
    assert token.encode() not in bytes(record.response_body)
    assert record.org_id == tenant.org.id


def test_a_record_expires_after_the_ttl_and_the_key_runs_again(tenant, settings):
    settings.IDEMPOTENCY_TTL_SECONDS = 1
    first = post(tenant, key="short-lived")
    assert post(tenant, key="short-lived").headers["Idempotent-Replayed"] == "true"
    time.sleep(1.2)  # both the record and its Redis copy are past their TTL
    again = post(tenant, key="short-lived")
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert Expense.objects.count() == 2
    assert IdempotencyRecord.objects.count() == 1  # the expired record was reused in place


def test_the_purge_command_deletes_expired_records_in_batches_and_keeps_live_ones(tenant):
    for n in range(5):
        assert post(tenant, key=f"old-{n}").status_code == 201
    assert post(tenant, key="live").status_code == 201
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE idempotency_record SET expires_at = now() - interval '1 second' WHERE created_at < %s",
            [IdempotencyRecord.objects.latest("created_at").created_at],
        )
    out = StringIO()
    call_command("idempotency_purge_expired", "--batch-size", "2", stdout=out)
    assert IdempotencyRecord.objects.count() == 1
    assert "deleted 5 expired idempotency records in 3 batches" in out.getvalue()
    assert post(tenant, key="live").headers["Idempotent-Replayed"] == "true"


def test_counters_move_for_executed_replayed_conflict_free_paths(tenant):
    before = {o: counter(o) for o in ("executed", "replayed", "invalid")}
    post(tenant, key="count-me")
    post(tenant, key="count-me")
    post(tenant, key="x" * 300)
    assert counter("executed") == before["executed"] + 1
    assert counter("replayed") == before["replayed"] + 1
    assert counter("invalid") == before["invalid"] + 1


def test_an_unknown_entry_patch_is_404_and_keeps_nothing(tenant):
    url = tenant.url(f"/expenses/{uuid.uuid4()}")
    assert (
        tenant.manager.patch(url, {"amount": "1.00"}, format="json", HTTP_IDEMPOTENCY_KEY="nf").status_code
        == 404
    )
    assert IdempotencyRecord.objects.count() == 0


def test_the_openapi_schema_documents_the_header_on_writes(client):
    schema = client.get("/v1/schema").json()
    post_params = schema["paths"]["/v1/orgs/{org_id}/expenses"]["post"]["parameters"]
    get_params = schema["paths"]["/v1/orgs/{org_id}/expenses"]["get"]["parameters"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in post_params)
    assert not any(p["name"] == "Idempotency-Key" for p in get_params)
    assert any(p["name"] == "Idempotency-Key" for p in schema["paths"]["/v1/orgs"]["post"]["parameters"])


def test_while_the_key_is_claimed_in_flight_the_same_request_is_409_with_retry_after(tenant):
    """A claim held in Redis (as a running first attempt holds it) with this request's fingerprint."""
    from idempotency.identity import request_fingerprint

    scope = IdempotencyScope.of(org_id=tenant.org.id, user_id=tenant.users["manager"].id, key="busy")
    fingerprint = request_fingerprint(
        method="POST", path=tenant.url("/expenses"), body=tenant.entry_payload()
    )
    claim = fast_path().claim(scope=scope, fingerprint=fingerprint, lock_ttl_ms=5000)
    assert claim is not None and claim.value
    conflicts_before = counter("conflict")
    busy = post(tenant, key="busy")
    assert busy.status_code == 409
    assert busy.headers["Retry-After"] == "1"
    assert post(tenant, key="busy", amount="5.00").status_code == 422  # another request: told at once
    assert Expense.objects.count() == 0
    assert counter("conflict") == conflicts_before + 1


def test_the_counters_are_exported_in_prometheus_text(tenant):
    from prometheus_client import generate_latest

    post(tenant, key="exported")
    post(tenant, key="exported")
    text = generate_latest(REGISTRY).decode()
    assert 'idempotency_requests_total{outcome="executed"}' in text
    assert 'idempotency_requests_total{outcome="replayed"}' in text
    assert "idempotency_redis_degraded_total" in text


def test_a_malformed_body_with_a_key_is_400_and_the_key_stays_free(tenant):
    broken = tenant.manager.post(
        tenant.url("/expenses"),
        b'{"amount": "12.50",',
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="m",
    )
    assert broken.status_code == 400
    assert "JSON parse error" in broken.json()["detail"]
    assert IdempotencyRecord.objects.count() == 0
    assert post(tenant, key="m").status_code == 201


@pytest.mark.django_db(transaction=True)  # the keyed write's transaction is the outermost one, as in a server
def test_a_keyed_create_failing_after_its_first_writes_rolls_back_whole_and_the_key_stays_free(
    tenant, monkeypatch
):
    """The REST create runs in the keyed write's transaction without a savepoint of its
    own (no SAVEPOINT/RELEASE round trips): a failure after the counter and the entry
    were written (here the change record refused, as for an org caught moving) rolls
    back all of it with the request, and the same key then runs."""
    from django.test.utils import CaptureQueriesContext

    from changelog.models import OrgChangeCounter, OutboxEntry
    from directory.exceptions import OrgMoving

    assert post(tenant, key="warm").status_code == 201
    version = OrgChangeCounter.objects.get(org_id=tenant.org.id).version
    outbox = OutboxEntry.objects.count()

    def refused(self, **recorded):
        raise OrgMoving()

    monkeypatch.setattr("changelog.services.PreparedChange.recorded", refused)
    with CaptureQueriesContext(connection) as queries:
        failed = post(tenant, key="retry-me", amount="7.00")
    assert failed.status_code == 503
    assert any("INSERT INTO finance_expense" in q["sql"] for q in queries.captured_queries)  # it did write
    assert not any("SAVEPOINT" in q["sql"] for q in queries.captured_queries)
    assert Expense.objects.filter(amount="7.00").count() == 0
    assert OrgChangeCounter.objects.get(org_id=tenant.org.id).version == version
    assert OutboxEntry.objects.count() == outbox
    assert IdempotencyRecord.objects.count() == 1  # the warm-up's only
    monkeypatch.undo()
    retried = post(tenant, key="retry-me", amount="7.00")
    assert retried.status_code == 201
    assert Expense.objects.filter(amount="7.00").count() == 1


@pytest.mark.parametrize("attempt", ["first", "replay"])
def test_the_key_is_claimed_in_the_rate_limits_redis_round_trip(tenant, redis_wire, attempt):
    """One round trip before the handler: the per-token count and the claim go together
    (a pipeline; on a Redis Cluster one batch per node, written before any reply is read)."""
    if attempt == "replay":
        assert post(tenant, key="together").status_code == 201
    redis_wire.clear()
    response = post(tenant, key="together")
    assert response.status_code == 201
    assert (response.headers.get("Idempotent-Replayed") == "true") is (attempt == "replay")
    assert written_together(redis_wire, (b"rl:{",), (b"idem:{", b"\r\nNX\r\n"))
    claims = [event for event in redis_wire if event[0] == "send" and b"\r\nNX\r\n" in event[1]]
    assert len(claims) == 1  # claimed once, never again alone
    assert Expense.objects.count() == 1


def test_a_keyed_write_refused_by_the_rate_limit_frees_its_claim(tenant, settings):
    """The claim went out with the count that says 429: it is released at once, so the
    same key runs (not 409) once the client may write again."""
    from tests.throttles import clear_throttle_counters

    clear_throttle_counters()
    settings.API_RATE_LIMIT_PER_MINUTE = 1
    if time.time() % 60 > 55:  # the count must not roll over to a new minute in between
        time.sleep(61 - time.time() % 60)
    assert tenant.manager.get(tenant.url("/expenses")).status_code == 200  # the minute's one request
    refused = post(tenant, key="throttled")
    assert refused.status_code == 429
    scope = IdempotencyScope.of(org_id=tenant.org.id, user_id=tenant.users["manager"].id, key="throttled")
    assert fast_path()._client.get(scope.redis_key()) is None
    settings.API_RATE_LIMIT_PER_MINUTE = 1000
    assert post(tenant, key="throttled").status_code == 201
    assert Expense.objects.count() == 1


def test_a_malformed_body_past_the_rate_limit_is_still_429_first(tenant, settings):
    """The body is parsed before the rate limit (the claim needs its fingerprint); its
    error still comes after the rate limit's answer, as before."""
    from tests.throttles import clear_throttle_counters

    clear_throttle_counters()
    settings.API_RATE_LIMIT_PER_MINUTE = 1
    if time.time() % 60 > 55:
        time.sleep(61 - time.time() % 60)
    broken = {"content_type": "application/json", "HTTP_IDEMPOTENCY_KEY": "m"}
    assert tenant.manager.post(tenant.url("/expenses"), b'{"amount":', **broken).status_code == 400
    assert tenant.manager.post(tenant.url("/expenses"), b'{"amount":', **broken).status_code == 429
    clear_throttle_counters()
    assert "JSON parse error" in tenant.manager.post(tenant.url("/expenses"), b"{", **broken).json()["detail"]
