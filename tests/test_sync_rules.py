"""CONTRACT §10, rule by rule: pull (reset, paging on version boundaries, incremental,
cookies that must reset) and push (applied once, already_applied, gap 409, rejected but
processed, conflict with the current value, viewer 403, another user's client 403,
non-member 404), on the real Postgres with the after-commit handlers running."""

import datetime
import uuid
from decimal import Decimal

import pytest

from changelog.models import OrgChangeCounter, Tombstone
from finance.models import Expense, Revenue
from sync.models import SyncClient
from tests.sync_support import create_mutation, pull_all, server_state

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _primary_only(settings):
    """These rules are about the protocol; tests/test_sync_consistency.py covers replicas."""
    settings.USE_READ_REPLICAS = False


def _pull_url(tenant):
    return tenant.url("/sync/pull")


def _push_url(tenant):
    return tenant.url("/sync/push")


def _push(tenant, client_id, mutations, role="manager", **headers):
    return tenant.clients[role].post(
        _push_url(tenant), {"client_id": str(client_id), "mutations": mutations}, format="json", **headers
    )


def _seed(tenant, count):
    for n in range(count):
        response = tenant.manager.post(
            tenant.url("/expenses" if n % 2 else "/revenues"),
            tenant.entry_payload(amount=f"{n + 1}.00"),
            format="json",
        )
        assert response.status_code == 201


def test_first_pull_resets_to_the_whole_state_and_then_nothing_is_new(tenant):
    _seed(tenant, 3)
    result = pull_all(tenant.viewer, _pull_url(tenant), None)
    [page] = result["pages"]
    assert page["reset"] is True and page["has_more"] is False
    assert result["state"] == server_state(tenant.org.id)
    assert len(result["state"]) == 4  # the property and three entries
    counter = OrgChangeCounter.objects.get(org_id=tenant.org.id)
    assert page["cookie"] == f"{counter.epoch}.{counter.version}"
    again = tenant.viewer.post(_pull_url(tenant), {"cookie": page["cookie"]}, format="json").json()
    assert again == {
        "cookie": page["cookie"],
        "reset": False,
        "changes": [],
        "has_more": False,
        "last_mutation_id": 0,
    }


def test_incremental_pull_gives_exactly_the_puts_and_deletes_since_the_cookie_in_version_order(tenant):
    _seed(tenant, 2)
    cookie = pull_all(tenant.viewer, _pull_url(tenant))["cookie"]
    created = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json").json()
    tenant.manager.patch(tenant.url(f"/expenses/{created['id']}"), {"amount": "9.99"}, format="json")
    old = Revenue.objects.filter(org=tenant.org).first()
    assert old is not None
    tenant.manager.delete(tenant.url(f"/revenues/{old.id}"))
    page = tenant.viewer.post(_pull_url(tenant), {"cookie": cookie}, format="json").json()
    assert page["reset"] is False
    ops = [(c["op"], c["entity"], c["id"]) for c in page["changes"]]
    assert ops == [("put", "expense", created["id"]), ("del", "revenue", str(old.id))]
    assert page["changes"][0]["value"]["amount"] == "9.99"
    assert page["changes"][0]["value"] == tenant.manager.get(tenant.url(f"/expenses/{created['id']}")).json()


def test_pages_end_on_version_boundaries_and_following_them_gives_the_state(tenant):
    _seed(tenant, 7)
    cookie = None
    seen_versions: list[int] = []
    result = pull_all(tenant.viewer, _pull_url(tenant), cookie, limit=3)
    assert [len(p["changes"]) for p in result["pages"]] == [3, 3, 2]
    assert [p["reset"] for p in result["pages"]] == [True, False, False]
    assert [p["has_more"] for p in result["pages"]] == [True, True, False]
    for page in result["pages"]:
        versions = [c["value"]["version"] for c in page["changes"]]
        assert versions == sorted(versions)
        seen_versions += versions
        if page["has_more"]:
            assert page["cookie"].endswith(f".{versions[-1]}")  # the page's last whole version
    assert len(set(seen_versions)) == len(seen_versions)
    assert result["state"] == server_state(tenant.org.id)


def test_one_version_larger_than_a_page_is_paged_inside_it_without_loss(tenant):
    """Rows seeded before the change log all carry version 0."""
    for n in range(5):
        Expense.objects.create(
            org=tenant.org, property=tenant.property, amount=Decimal("1.00") + n, currency="EUR",
            category="seeded", occurred_on="2026-01-01", created_by=tenant.users["owner"],
        )  # fmt: skip
    result = pull_all(tenant.viewer, _pull_url(tenant), limit=2)
    assert [len(p["changes"]) for p in result["pages"]] == [2, 2, 2]
    assert result["state"] == server_state(tenant.org.id)
    assert len(result["state"]) == 6


def test_changes_between_pages_of_a_reset_are_not_lost(tenant):
    _seed(tenant, 6)
    first = tenant.viewer.post(_pull_url(tenant), {"cookie": None, "limit": 3}, format="json").json()
    assert first["has_more"]
    state = {(c["entity"], c["id"]): c["value"] for c in first["changes"]}
    sent = [c for c in first["changes"] if c["entity"] != "property"]
    # Between pages: delete one already sent, change one not yet sent, add one.
    tenant.manager.delete(tenant.url(f"/{sent[0]['entity']}s/{sent[0]['id']}"))
    later = Expense.objects.filter(org=tenant.org).latest("version")
    tenant.manager.patch(tenant.url(f"/expenses/{later.id}"), {"category": "moved"}, format="json")
    tenant.manager.post(tenant.url("/revenues"), tenant.entry_payload(), format="json")
    rest = pull_all(tenant.viewer, _pull_url(tenant), first["cookie"], limit=3, state=state)
    assert rest["state"] == server_state(tenant.org.id)


UNKNOWN_COOKIES = ["garbage", "", "1", "1.x", "2.0", "1.999999", "1.-1", "1.0.7.abc", "1.0.1.zz", "x" * 500]


def test_unknown_foreign_or_future_cookies_get_reset(tenant):
    _seed(tenant, 1)
    for cookie in UNKNOWN_COOKIES:
        page = tenant.viewer.post(_pull_url(tenant), {"cookie": cookie}, format="json").json()
        assert page["reset"] is True, cookie
        assert {(c["entity"], c["id"]) for c in page["changes"]} == set(server_state(tenant.org.id))


def test_a_cookie_older_than_the_tombstone_horizon_or_another_epoch_gets_reset(tenant):
    _seed(tenant, 2)
    cookie = pull_all(tenant.viewer, _pull_url(tenant))["cookie"]
    counter = OrgChangeCounter.objects.get(org_id=tenant.org.id)
    OrgChangeCounter.objects.filter(org_id=tenant.org.id).update(pruned_through=counter.version + 0)
    page = tenant.viewer.post(_pull_url(tenant), {"cookie": cookie}, format="json").json()
    assert page["reset"] is False  # at the horizon: every tombstone after it is still kept
    _seed(tenant, 1)
    OrgChangeCounter.objects.filter(org_id=tenant.org.id).update(pruned_through=counter.version + 1)
    page = tenant.viewer.post(_pull_url(tenant), {"cookie": cookie}, format="json").json()
    assert page["reset"] is True
    OrgChangeCounter.objects.filter(org_id=tenant.org.id).update(epoch="2", pruned_through=0)
    page = tenant.viewer.post(_pull_url(tenant), {"cookie": page["cookie"]}, format="json").json()
    assert page["reset"] is True and page["cookie"].startswith("2.")


MALFORMED_PULLS = [
    {"cookie": 12},
    {"cookie": ["1.0"]},
    {"limit": 0},
    {"limit": 1001},
    {"limit": "5"},
    {"limit": True},
    {"client_id": "not-a-uuid"},
    {"cokie": None},
]


def test_malformed_pull_bodies_are_400_with_field_errors(tenant):
    for body in MALFORMED_PULLS:
        response = tenant.viewer.post(_pull_url(tenant), body, format="json")
        assert response.status_code == 400, body
        assert set(response.json()) <= {"cookie", "limit", "client_id", "cokie"}


def test_non_members_get_404_and_viewers_may_pull_but_not_push(tenant, other_tenant):
    assert other_tenant.owner.post(_pull_url(tenant), {}, format="json").status_code == 404
    assert (
        other_tenant.owner.post(
            _push_url(tenant), {"client_id": str(uuid.uuid4()), "mutations": []}, format="json"
        ).status_code
        == 404
    )
    assert tenant.viewer.post(_pull_url(tenant), {}, format="json").status_code == 200
    response = _push(tenant, uuid.uuid4(), [create_mutation(1, tenant)], role="viewer")
    assert response.status_code == 403
    assert not Expense.objects.filter(org=tenant.org).exists()


def test_push_applies_once_reports_versions_and_already_applied_on_retry(tenant):
    client_id = uuid.uuid4()
    batch = [create_mutation(1, tenant), create_mutation(2, tenant, kind="revenue")]
    first = _push(tenant, client_id, batch)
    assert first.status_code == 200, first.content
    body = first.json()
    assert [r["status"] for r in body["results"]] == ["applied", "applied"]
    assert body["last_mutation_id"] == 2
    expense = Expense.objects.get(id=batch[0]["args"]["id"])
    assert body["results"][0]["version"] == expense.version
    assert expense.created_by == tenant.users["manager"]
    retry = _push(tenant, client_id, batch).json()
    assert retry == {
        "results": [{"id": 1, "status": "already_applied"}, {"id": 2, "status": "already_applied"}],
        "last_mutation_id": 2,
    }
    assert Expense.objects.filter(org=tenant.org).count() == 1
    assert Revenue.objects.filter(org=tenant.org).count() == 1
    page = tenant.manager.post(_pull_url(tenant), {"client_id": str(client_id)}, format="json").json()
    assert page["last_mutation_id"] == 2


def test_a_gap_is_409_with_expected_and_the_mutations_before_it_applied(tenant):
    client_id = uuid.uuid4()
    response = _push(
        tenant,
        client_id,
        [create_mutation(1, tenant), create_mutation(2, tenant), create_mutation(4, tenant)],
    )
    assert response.status_code == 409
    assert response.json()["expected"] == 3 and "detail" in response.json()
    assert Expense.objects.filter(org=tenant.org).count() == 2
    assert SyncClient.objects.get(client_id=client_id).last_mutation_id == 2
    first = _push(tenant, uuid.uuid4(), [create_mutation(2, tenant)])
    assert first.status_code == 409 and first.json()["expected"] == 1


def test_rejected_mutations_are_processed_with_field_errors_and_do_not_block_the_queue(tenant, other_tenant):
    client_id = uuid.uuid4()
    response = _push(
        tenant,
        client_id,
        [
            create_mutation(1, tenant, amount="-3.00"),
            create_mutation(2, tenant, property_id=str(other_tenant.property.id)),
            create_mutation(3, tenant, currency="XXQ"),
            {
                "id": 4,
                "name": "expense.update",
                "args": {"id": str(uuid.uuid4()), "base_version": 1, "amount": "2.00"},
            },
            create_mutation(5, tenant),
        ],
    )
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected"] * 4 + ["applied"]
    assert results[0]["error"]["code"] == "invalid" and "amount" in results[0]["error"]
    assert "property_id" in results[1]["error"]
    assert "currency" in results[2]["error"]
    assert results[3]["error"]["code"] == "not_found"
    assert response.json()["last_mutation_id"] == 5
    assert Expense.objects.filter(org=tenant.org).count() == 1


def test_a_stale_base_version_is_rejected_with_the_current_value_never_overwritten(tenant):
    client_id = uuid.uuid4()
    create = create_mutation(1, tenant)
    version = _push(tenant, client_id, [create]).json()["results"][0]["version"]
    entry_id = create["args"]["id"]
    tenant.owner.patch(tenant.url(f"/expenses/{entry_id}"), {"amount": "70.00"}, format="json")
    response = _push(
        tenant,
        client_id,
        [
            {
                "id": 2,
                "name": "expense.update",
                "args": {"id": entry_id, "base_version": version, "amount": "1.00"},
            },
            {"id": 3, "name": "expense.delete", "args": {"id": entry_id, "base_version": version}},
        ],
    ).json()
    assert [r["status"] for r in response["results"]] == ["rejected", "rejected"]
    current = tenant.owner.get(tenant.url(f"/expenses/{entry_id}")).json()
    for result in response["results"]:
        assert result["error"]["code"] == "conflict"
        assert result["error"]["current"] == current
    assert current["amount"] == "70.00"
    ok = _push(
        tenant,
        client_id,
        [{"id": 4, "name": "expense.delete", "args": {"id": entry_id, "base_version": current["version"]}}],
    ).json()
    assert ok["results"][0]["status"] == "applied"
    tombstone = Tombstone.objects.get(org_id=tenant.org.id, entity_id=entry_id)
    assert ok["results"][0]["version"] == tombstone.version


def test_a_client_id_belongs_to_the_user_who_first_pushed_it(tenant):
    client_id = uuid.uuid4()
    assert _push(tenant, client_id, [create_mutation(1, tenant)]).status_code == 200
    response = _push(tenant, client_id, [create_mutation(2, tenant)], role="owner")
    assert response.status_code == 403
    assert Expense.objects.filter(org=tenant.org).count() == 1
    pull = tenant.owner.post(_pull_url(tenant), {"client_id": str(client_id)}, format="json")
    assert pull.status_code == 403


def test_create_ids_are_never_reused(tenant):
    client_id = uuid.uuid4()
    create = create_mutation(1, tenant)
    _push(tenant, client_id, [create])
    same_org = _push(tenant, client_id, [{**create, "id": 2}]).json()["results"][0]
    assert same_org["status"] == "rejected" and same_org["error"]["code"] == "conflict"
    as_revenue = _push(tenant, client_id, [{**create, "id": 3, "name": "revenue.create"}]).json()["results"][
        0
    ]
    assert as_revenue["status"] == "rejected" and "id" in as_revenue["error"]


MALFORMED_PUSHES = [
    {"mutations": []},
    {"client_id": "x", "mutations": []},
    {"client_id": str(uuid.uuid4()), "mutations": [{"id": "1", "name": "expense.create", "args": {}}]},
    {"client_id": str(uuid.uuid4()), "mutations": [{"id": 0, "name": "expense.create", "args": {}}]},
    {"client_id": str(uuid.uuid4()), "mutations": [{"id": 1, "name": "expense.explode", "args": {}}]},
    {"client_id": str(uuid.uuid4()), "mutations": [{"id": 1, "name": "expense.create", "args": []}]},
    {"client_id": str(uuid.uuid4()), "mutations": [{"id": 1, "name": "expense.create", "args": {}, "x": 1}]},
    {"client_id": str(uuid.uuid4()), "mutations": {}},
    {"client_id": str(uuid.uuid4()), "mutations": [create_mutation(1, None)] * 1001},
]


def test_malformed_push_envelopes_are_400_and_change_nothing(tenant):
    for body in MALFORMED_PUSHES:
        response = tenant.manager.post(_push_url(tenant), body, format="json")
        assert response.status_code == 400, (body, response.content)
    assert not SyncClient.objects.exists()
    assert not Expense.objects.exists()


def test_idempotency_key_replays_a_push_and_keeps_a_gap_409_with_its_applied_mutations(tenant):
    client_id = uuid.uuid4()
    batch = [create_mutation(1, tenant), create_mutation(3, tenant)]
    headers = {"HTTP_IDEMPOTENCY_KEY": "sync-push-gap-1"}
    first = _push(tenant, client_id, batch, **headers)
    assert first.status_code == 409 and first.json()["expected"] == 2
    assert Expense.objects.filter(org=tenant.org).count() == 1  # committed with the key's record
    replay = _push(tenant, client_id, batch, **headers)
    assert replay.status_code == 409 and replay["Idempotent-Replayed"] == "true"
    ok = _push(tenant, client_id, [create_mutation(2, tenant)], HTTP_IDEMPOTENCY_KEY="sync-push-2")
    assert ok.json()["results"][0]["status"] == "applied"
    again = _push(tenant, client_id, [create_mutation(2, tenant)], HTTP_IDEMPOTENCY_KEY="sync-push-2")
    assert again.status_code == 422  # same key, another body (a new uuid)
    assert Expense.objects.filter(org=tenant.org).count() == 2


def test_a_user_demoted_while_pushing_gets_forbidden_rejections_that_still_advance_the_id(tenant):
    """The role is read under the lock of each mutation, not only at the request's start:
    a manager demoted mid-push has the rest of the batch rejected as forbidden."""
    from sync.mutations import Mutation
    from sync.services import sync_push
    from tenancy.models import Membership

    client_id = uuid.uuid4()
    manager = tenant.users["manager"]
    first = create_mutation(1, tenant)
    outcome = sync_push(org=tenant.org, user=manager, client_id=client_id, mutations=[Mutation(**first)])
    assert [r.status for r in outcome.results] == ["applied"]
    Membership.objects.filter(org=tenant.org, user=manager).update(role="viewer")  # demoted
    second = create_mutation(2, tenant)
    outcome = sync_push(org=tenant.org, user=manager, client_id=client_id, mutations=[Mutation(**second)])
    rejected = outcome.results[0]
    assert (
        rejected.status == "rejected" and rejected.error is not None and rejected.error["code"] == "forbidden"
    )
    assert outcome.last_mutation_id == 2
    assert Expense.objects.filter(org=tenant.org).count() == 1


def test_a_deleted_property_is_a_delete_in_the_next_pull_and_absent_from_a_reset(tenant):
    from tenancy.models import Property
    from tenancy.services import property_delete

    created = tenant.owner.post(
        tenant.url("/properties"),
        {"name": "Annex", "currency": "EUR", "timezone": "Europe/Paris"},
        format="json",
    )
    assert created.status_code == 201
    annex_id = created.json()["id"]
    synced = pull_all(tenant.viewer, _pull_url(tenant))
    assert ("property", annex_id) in synced["state"]
    property_delete(prop=Property.objects.get(id=annex_id))  # as the admin does; no REST route deletes one
    tombstone = Tombstone.objects.get(org_id=tenant.org.id, entity_id=annex_id)
    page = tenant.viewer.post(_pull_url(tenant), {"cookie": synced["cookie"]}, format="json").json()
    assert page["reset"] is False
    assert page["changes"] == [{"op": "del", "entity": "property", "id": annex_id}]
    assert page["cookie"] == f"1.{tombstone.version}"
    after = pull_all(tenant.viewer, _pull_url(tenant), synced["cookie"], state=synced["state"])
    assert after["state"] == server_state(tenant.org.id)
    reset = pull_all(tenant.viewer, _pull_url(tenant))  # a new client: the state, no deletes
    assert all(change["op"] == "put" for p in reset["pages"] for change in p["changes"])
    assert ("property", annex_id) not in reset["state"]


def test_a_cookie_from_before_really_pruned_tombstones_gets_reset_a_later_one_does_not(tenant, settings):
    """The outbox worker's maintenance (changelog/maintenance.py) prunes tombstones older
    than SYNC_TOMBSTONE_DAYS and raises the org's horizon; a cookie that would need a
    pruned tombstone resets, one from after it pulls the deletions it has not seen."""
    from django.utils import timezone

    from tests import conftest
    from tests.live_server import outbox_worker
    from tests.replica_support import wait_until

    _seed(tenant, 4)
    old_cookie = pull_all(tenant.viewer, _pull_url(tenant))["cookie"]
    old, recent = list(Expense.objects.filter(org_id=tenant.org.id)[:2])
    assert tenant.manager.delete(tenant.url(f"/expenses/{old.id}")).status_code == 204
    between_cookie = pull_all(tenant.viewer, _pull_url(tenant), old_cookie)["cookie"]
    assert tenant.manager.delete(tenant.url(f"/expenses/{recent.id}")).status_code == 204
    old_stone = Tombstone.objects.get(entity_id=old.id)
    Tombstone.objects.filter(id=old_stone.id).update(  # deleted SYNC_TOMBSTONE_DAYS + 1 days ago
        deleted_at=timezone.now() - datetime.timedelta(days=settings.SYNC_TOMBSTONE_DAYS + 1)
    )
    with outbox_worker(conftest.test_database_url(), CHANGELOG_MAINTENANCE_SECONDS="0.2"):
        wait_until(lambda: not Tombstone.objects.filter(id=old_stone.id).exists(), 30)
    assert Tombstone.objects.filter(entity_id=recent.id).exists()  # younger: kept
    assert OrgChangeCounter.objects.get(org_id=tenant.org.id).pruned_through == old_stone.version

    stale = tenant.viewer.post(_pull_url(tenant), {"cookie": old_cookie}, format="json").json()
    assert stale["reset"] is True  # it never saw the pruned deletion: only a reset is exact
    assert {(c["entity"], c["id"]) for c in stale["changes"]} == set(server_state(tenant.org.id))
    fresh = tenant.viewer.post(_pull_url(tenant), {"cookie": between_cookie}, format="json").json()
    assert fresh["reset"] is False
    assert fresh["changes"] == [{"op": "del", "entity": "expense", "id": str(recent.id)}]


def test_an_epoch_change_resets_a_cookie_of_the_current_version_then_pulls_go_on_from_the_new_cookie(tenant):
    """A restore or an org move rewrites the org's history and changes its epoch
    (nothing in this repository changes it yet: it is set here as they would)."""
    _seed(tenant, 3)
    synced = pull_all(tenant.viewer, _pull_url(tenant))
    assert synced["cookie"].startswith("1.")
    OrgChangeCounter.objects.filter(org_id=tenant.org.id).update(epoch="7")
    page = tenant.viewer.post(_pull_url(tenant), {"cookie": synced["cookie"]}, format="json").json()
    assert page["reset"] is True and not page["has_more"]
    assert {(c["entity"], c["id"]) for c in page["changes"]} == set(server_state(tenant.org.id))
    counter = OrgChangeCounter.objects.get(org_id=tenant.org.id)
    assert page["cookie"] == f"7.{counter.version}"
    _seed(tenant, 1)
    after = tenant.viewer.post(_pull_url(tenant), {"cookie": page["cookie"]}, format="json").json()
    assert after["reset"] is False and [c["op"] for c in after["changes"]] == ["put"]
    assert after["cookie"].startswith("7.")
