"""Expenses and revenues: CRUD, validation (CONTRACT §2), exact money, pagination, summary."""

import json
from decimal import Decimal

import pytest

from changelog.models import OutboxEntry
from finance.models import Expense, Revenue

pytestmark = pytest.mark.django_db

KINDS = [("expenses", Expense), ("revenues", Revenue)]
RESOURCE_FIELDS = {
    "id", "org_id", "property_id", "amount", "currency", "category", "description",
    "occurred_on", "created_by", "created_at", "updated_at", "version",
}  # fmt: skip


@pytest.mark.parametrize(("kind", "model"), KINDS)
def test_create_retrieve_update_delete(tenant, kind, model):
    created = tenant.manager.post(tenant.url(f"/{kind}"), tenant.entry_payload(), format="json")
    assert created.status_code == 201
    body = created.json()
    assert set(body) == RESOURCE_FIELDS
    assert body["amount"] == "12.50"
    assert body["org_id"] == str(tenant.org.id)
    assert body["created_by"] == str(tenant.users["manager"].id)
    row = model.objects.get(id=body["id"])
    assert (row.amount, row.org_id, row.currency) == (Decimal("12.50"), tenant.org.id, "EUR")

    detail = tenant.viewer.get(tenant.url(f"/{kind}/{body['id']}"))
    assert detail.status_code == 200
    assert detail.json() == body

    patched = tenant.owner.patch(tenant.url(f"/{kind}/{body['id']}"), {"amount": "99.99"}, format="json")
    assert patched.status_code == 200
    assert patched.json()["amount"] == "99.99"
    assert patched.json()["category"] == "laundry"
    row.refresh_from_db()
    assert row.amount == Decimal("99.99")

    deleted = tenant.manager.delete(tenant.url(f"/{kind}/{body['id']}"))
    assert deleted.status_code == 204
    assert not model.objects.filter(id=body["id"]).exists()
    assert tenant.viewer.get(tenant.url(f"/{kind}/{body['id']}")).status_code == 404


@pytest.mark.parametrize("kind", ["expenses", "revenues"])
def test_a_viewer_cannot_write(tenant, kind):
    created = tenant.manager.post(tenant.url(f"/{kind}"), tenant.entry_payload(), format="json").json()
    url = tenant.url(f"/{kind}/{created['id']}")
    assert (
        tenant.viewer.post(tenant.url(f"/{kind}"), tenant.entry_payload(), format="json").status_code == 403
    )
    assert tenant.viewer.patch(url, {"amount": "1.00"}, format="json").status_code == 403
    assert tenant.viewer.delete(url).status_code == 403
    assert Expense.objects.count() + Revenue.objects.count() == 1
    assert tenant.viewer.get(url).json()["amount"] == "12.50"


# --- validation ------------------------------------------------------------------------

INVALID_BODIES = [
    ("amount", {"amount": "0"}),
    ("amount", {"amount": 0}),
    ("amount", {"amount": "-5.00"}),
    ("amount", {"amount": "1.005"}),
    ("amount", {"amount": "1234567890123.00"}),  # 13 digits before the point
    ("amount", {"amount": "NaN"}),
    ("amount", {"amount": "Infinity"}),
    ("amount", {"amount": "-Infinity"}),
    ("amount", {"amount": "1e400"}),
    ("amount", {"amount": True}),
    ("amount", {"amount": [1]}),
    ("amount", {"amount": {"value": 1}}),
    ("amount", {"amount": "12,50"}),
    ("amount", {"amount": None}),
    ("currency", {"currency": "ABC"}),
    ("currency", {"currency": "EURO"}),
    ("currency", {"currency": 978}),
    ("occurred_on", {"occurred_on": "2026-13-01"}),
    ("occurred_on", {"occurred_on": "yesterday"}),
    ("property_id", {"property_id": "not-a-uuid"}),
    ("category", {"category": ""}),
    ("category", {"category": "x" * 65}),
    ("description", {"description": "x" * 2001}),
    ("ammount", {"ammount": "12.50"}),  # unknown field
    ("org_id", {"org_id": "00000000-0000-7000-8000-000000000000"}),  # read-only is unknown input
    ("id", {"id": "00000000-0000-7000-8000-000000000000"}),
]


@pytest.mark.parametrize(
    ("field", "change"), INVALID_BODIES, ids=[json.dumps(c)[:40] for _, c in INVALID_BODIES]
)
def test_each_invalid_field_is_a_400_naming_it_and_writes_nothing(tenant, field, change):
    response = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(**change), format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert isinstance(response.json()[field], list)
    assert Expense.objects.count() == 0


@pytest.mark.parametrize("missing", ["property_id", "amount", "currency", "category", "occurred_on"])
def test_each_required_field_is_required(tenant, missing):
    payload = tenant.entry_payload()
    del payload[missing]
    response = tenant.manager.post(tenant.url("/expenses"), payload, format="json")
    assert response.status_code == 400
    assert response.json()[missing] == ["This field is required."]
    assert Expense.objects.count() == 0


def _org_state(org_id):
    from changelog.models import OrgChangeCounter, OutboxEntry
    from idempotency.models import IdempotencyRecord

    counter = OrgChangeCounter.objects.filter(org_id=org_id).values_list("version", flat=True).first()
    return counter, Expense.objects.count(), OutboxEntry.objects.count(), IdempotencyRecord.objects.count()


@pytest.mark.django_db(transaction=True)  # the create's transaction is the outermost one, as in a server
@pytest.mark.parametrize("key", [None, "k-property"], ids=["plain", "keyed"])
@pytest.mark.parametrize("whose", ["another org's", "unknown"])
def test_a_property_not_of_the_org_is_a_field_error_and_writes_nothing(tenant, other_tenant, key, whose):
    """Checked by the create's one statement; the refusal rolls back the version it
    took with everything else."""
    assert (
        tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json").status_code == 201
    )
    before = _org_state(tenant.org.id)
    foreign = (
        str(other_tenant.property.id) if whose == "another org's" else "00000000-0000-7000-8000-000000000000"
    )
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    payload = tenant.entry_payload(property_id=foreign)
    response = tenant.manager.post(tenant.url("/expenses"), payload, format="json", **headers)
    assert response.status_code == 400
    assert response.json() == {"property_id": ["No such property in this organization."]}
    assert _org_state(tenant.org.id) == before  # no version taken, no entry, no change, no record
    after = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json", **headers)
    assert after.status_code == 201  # and a keyed retry with a good body runs
    assert after.json()["version"] == before[0] + 1


def test_a_create_takes_its_version_and_writes_entry_total_and_change_in_one_statement(tenant):
    """The org's counter row, the entry, its daily total and its outbox row: one round
    trip (the first create of a fixture's org, which has no counter row yet, adds it
    the long way; every later one is a single statement)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    assert (
        tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json").status_code == 201
    )
    with CaptureQueriesContext(connection) as queries:
        created = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json")
    assert created.status_code == 201
    writes = [q["sql"] for q in queries.captured_queries if "org_changes" in q["sql"]]
    assert len(writes) == 1, writes
    for table in ("UPDATE org_changes", "INSERT INTO finance_expense", "INSERT INTO finance_daily_total",
                  "INSERT INTO changelog_outbox"):  # fmt: skip
        assert table in writes[0], table
    row = Expense.objects.get(id=created.json()["id"])
    outbox = OutboxEntry.objects.filter(org_id=tenant.org.id, version=row.version).get()
    assert created.json()["version"] == row.version == outbox.data["version"]
    assert outbox.data == created.json()


@pytest.mark.django_db(transaction=True)
def test_a_create_waiting_for_a_property_delete_at_the_org_lock_is_refused_cleanly(tenant):
    """A property deleted by a writer that holds the org's counter row while a create
    into it waits there: once the delete commits, the create answers "no such property"
    (PropertyNotInOrg) with nothing written, not a foreign-key failure at commit (its
    statement's snapshot predates the delete; its property check must not rely on it)."""
    import threading

    from django.db import connection, transaction

    from finance.services import PropertyNotInOrg, entry_create
    from tenancy.services import property_create, property_delete
    from tests.replica_support import wait_until

    doomed = property_create(org=tenant.org, name="Annex", currency="EUR", timezone="Europe/Paris")
    before = _org_state(tenant.org.id)
    deleted, release = threading.Event(), threading.Event()

    def delete_and_hold() -> None:
        try:
            with transaction.atomic():
                property_delete(prop=doomed)
                deleted.set()
                release.wait(10)
        finally:
            connection.close()

    deleter = threading.Thread(target=delete_and_hold)
    deleter.start()
    assert deleted.wait(10)
    outcome: list[object] = []

    def create() -> None:
        try:
            entry_create(
                model=Expense, org=tenant.org, created_by=tenant.users["owner"], property_id=doomed.id,
                amount=Decimal("5.00"), currency="EUR", category="race", occurred_on="2026-11-02",
            )  # fmt: skip
            outcome.append("created")
        except Exception as error:
            outcome.append(error)
        finally:
            connection.close()

    creator = threading.Thread(target=create)
    creator.start()
    with connection.cursor() as cursor:  # the create waits for the deleter's counter row lock

        def waiting() -> bool:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%%org_changes%%'"
            )
            return cursor.fetchone()[0] == 1

        wait_until(waiting, timeout=10)
    release.set()
    deleter.join(10)
    creator.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], PropertyNotInOrg), outcome
    after = _org_state(tenant.org.id)
    assert after[0] == before[0] + 1  # the delete's version only
    assert after[1] == before[1]  # no entry
    assert not OutboxEntry.objects.filter(org_id=tenant.org.id, topic="expense.created").exists()


def test_a_create_sends_no_query_of_its_own_for_the_property(tenant):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        created = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json")
    assert created.status_code == 201
    assert created.json()["property_id"] == str(tenant.property.id)
    assert not [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().startswith('SELECT "tenancy_property"')
    ]


def test_other_field_errors_still_name_a_bad_property_too(tenant, other_tenant):
    payload = tenant.entry_payload(property_id=str(other_tenant.property.id), amount="-1", currency="XXX")
    response = tenant.manager.post(tenant.url("/expenses"), payload, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"property_id", "amount", "currency"}
    assert response.json()["property_id"] == ["No such property in this organization."]
    good = tenant.entry_payload(amount="-1")
    assert set(tenant.manager.post(tenant.url("/expenses"), good, format="json").json()) == {"amount"}
    assert Expense.objects.count() == 0


@pytest.mark.parametrize(
    ("raw", "expected_key"),
    [
        (b"", "property_id"),  # empty body: every required field is missing
        (b"{}", "property_id"),
        (b'{"amount": NaN}', "detail"),  # NaN and Infinity are not JSON
        (b'{"amount": Infinity}', "detail"),
        (b'{"amount": 12.5', "detail"),  # truncated
        (b"not json", "detail"),
        (b"[1, 2]", "non_field_errors"),
        (b'"a string"', "non_field_errors"),
        (b"\xff\xfe", "detail"),  # not UTF-8
        (b"[" * 100_000 + b"]" * 100_000, "detail"),  # nesting bomb
    ],
)
def test_malformed_bodies_are_clean_400s(tenant, raw, expected_key):
    response = tenant.manager.generic("POST", tenant.url("/expenses"), raw, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
    assert response["Content-Type"] == "application/json"
    assert expected_key in response.json()
    assert Expense.objects.count() == 0


def test_an_unsupported_content_type_is_415(tenant):
    response = tenant.manager.generic("POST", tenant.url("/expenses"), b"amount=1", content_type="text/plain")
    assert response.status_code == 415
    assert Expense.objects.count() == 0


def test_a_json_number_amount_is_read_exactly(tenant):
    raw = json.dumps(tenant.entry_payload()).replace('"12.50"', "1234567890.12").encode()
    response = tenant.manager.generic("POST", tenant.url("/expenses"), raw, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["amount"] == "1234567890.12"
    assert Expense.objects.get().amount == Decimal("1234567890.12")
    # The largest amount the contract allows survives the round trip too.
    raw = json.dumps(tenant.entry_payload()).replace('"12.50"', "999999999999.99").encode()
    response = tenant.manager.generic("POST", tenant.url("/expenses"), raw, content_type="application/json")
    assert response.json()["amount"] == "999999999999.99"


def test_patch_validates_like_create_and_rejects_unknown_fields(tenant, other_tenant):
    entry = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json").json()
    url = tenant.url(f"/expenses/{entry['id']}")
    for change in (
        {"amount": "-1"},
        {"currency": "XXX1"},
        {"property_id": str(other_tenant.property.id)},
        {"org_id": str(other_tenant.org.id)},
        {"colour": "red"},
    ):
        response = tenant.manager.patch(url, change, format="json")
        assert response.status_code == 400, change
        assert next(iter(change)) in response.json()
    row = Expense.objects.get()
    assert (row.amount, row.org_id, row.property_id) == (Decimal("12.50"), tenant.org.id, tenant.property.id)


# --- listing -----------------------------------------------------------------------------


def _post(tenant, kind="expenses", **overrides):
    response = tenant.manager.post(tenant.url(f"/{kind}"), tenant.entry_payload(**overrides), format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_list_is_newest_first_and_filters(tenant):
    second_property = tenant.owner.post(
        tenant.url("/properties"),
        {"name": "Annex", "currency": "USD", "timezone": "America/New_York"},
        format="json",
    ).json()
    a = _post(tenant, occurred_on="2026-01-10", category="food")
    b = _post(tenant, occurred_on="2026-03-10", category="laundry")
    c = _post(tenant, occurred_on="2026-02-10", category="food", property_id=second_property["id"])

    def ids(query: str = "") -> list[str]:
        response = tenant.viewer.get(tenant.url(f"/expenses{query}"))
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert ids() == [b["id"], c["id"], a["id"]]
    assert ids("?category=food") == [c["id"], a["id"]]
    assert ids(f"?property_id={second_property['id']}") == [c["id"]]
    assert ids("?from=2026-02-01") == [b["id"], c["id"]]
    assert ids("?to=2026-02-10") == [c["id"], a["id"]]
    assert ids("?from=2026-02-10&to=2026-02-10") == [c["id"]]


@pytest.mark.parametrize(
    "query",
    ["?from=2026-99-01", "?to=x", "?property_id=nope", "?page_size=0", "?page_size=201", "?page_size=a",
     "?cursor=garbage", "?cursor=W1siZGF0ZSIsIngiXV0", "?from=2026-02-02&to=2026-02-01"],
)  # fmt: skip
def test_bad_query_parameters_are_400(tenant, query):
    response = tenant.viewer.get(tenant.url(f"/expenses{query}"))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"


def test_cursor_pagination_never_skips_or_repeats_while_rows_are_inserted(tenant):
    for day in range(1, 26):
        _post(tenant, occurred_on=f"2026-05-{day:02d}")
    seen: list[str] = []
    url = tenant.url("/expenses?page_size=7")
    inserted_during: list[dict] = []
    while url:
        page = tenant.viewer.get(url).json()
        seen += [row["id"] for row in page["results"]]
        # Between page fetches, rows arrive: newer ones, older ones and same-day ones.
        for occurred_on in ("2026-06-30", "2026-04-01", "2026-05-13"):
            inserted_during.append(_post(tenant, occurred_on=occurred_on))
        url = page["next"]
        if len(inserted_during) > 60:
            break
    assert len(seen) == len(set(seen)), "a row was repeated"
    original = [
        str(i)
        for i in Expense.objects.filter(org=tenant.org)
        .exclude(id__in=[row["id"] for row in inserted_during])
        .order_by("-occurred_on", "-id")
        .values_list("id", flat=True)
    ]
    assert [i for i in seen if i in set(original)] == original, "a row was skipped or out of order"


def test_page_size_and_next_link(tenant):
    for _ in range(5):
        _post(tenant)
    first = tenant.viewer.get(tenant.url("/expenses?page_size=2&category=laundry")).json()
    assert len(first["results"]) == 2
    assert first["next"].startswith("http://testserver/v1/orgs/")
    assert "category=laundry" in first["next"]
    assert "page_size=2" in first["next"]
    rest = tenant.viewer.get(first["next"].removeprefix("http://testserver")).json()
    last = tenant.viewer.get(rest["next"].removeprefix("http://testserver")).json()
    assert len(rest["results"]) == 2 and len(last["results"]) == 1
    assert last["next"] is None


def test_list_query_count_does_not_grow_with_rows(tenant, django_assert_max_num_queries):
    for _ in range(30):
        _post(tenant)
    with django_assert_max_num_queries(3):  # token+user, membership+org, the page
        response = tenant.viewer.get(tenant.url("/expenses?page_size=30"))
    assert len(response.json()["results"]) == 30


# --- summary -------------------------------------------------------------------------------


def test_summary_totals_per_currency_and_property_never_mixed(tenant):
    annex = tenant.owner.post(
        tenant.url("/properties"), {"name": "Annex", "currency": "USD", "timezone": "UTC"}, format="json"
    ).json()
    _post(tenant, "revenues", amount="100.10", currency="EUR")
    _post(tenant, "revenues", amount="0.20", currency="EUR")
    _post(tenant, "expenses", amount="30.05", currency="EUR")
    _post(tenant, "revenues", amount="50.00", currency="USD", property_id=annex["id"])
    _post(tenant, "expenses", amount="75.00", currency="USD", property_id=annex["id"])
    _post(
        tenant, "expenses", amount="1.00", currency="JPY", property_id=annex["id"], occurred_on="2025-01-01"
    )

    summary = tenant.viewer.get(tenant.url("/finance/summary")).json()
    assert summary["totals"] == [
        {"currency": "EUR", "revenue": "100.30", "expense": "30.05", "net": "70.25"},
        {"currency": "JPY", "revenue": "0.00", "expense": "1.00", "net": "-1.00"},
        {"currency": "USD", "revenue": "50.00", "expense": "75.00", "net": "-25.00"},
    ]
    per_property = {p["property_id"]: p["totals"] for p in summary["properties"]}
    assert per_property[str(tenant.property.id)] == [
        {"currency": "EUR", "revenue": "100.30", "expense": "30.05", "net": "70.25"}
    ]
    assert [t["currency"] for t in per_property[annex["id"]]] == ["JPY", "USD"]

    # The totals equal the sum of the rows, currency by currency.
    for currency_total in summary["totals"]:
        currency = currency_total["currency"]
        revenue = sum(r.amount for r in Revenue.objects.filter(org=tenant.org, currency=currency))
        expense = sum(e.amount for e in Expense.objects.filter(org=tenant.org, currency=currency))
        assert Decimal(currency_total["revenue"]) == revenue
        assert Decimal(currency_total["expense"]) == expense

    filtered = tenant.viewer.get(tenant.url("/finance/summary?from=2026-01-01")).json()
    assert [t["currency"] for t in filtered["totals"]] == ["EUR", "USD"]
    only_annex = tenant.viewer.get(tenant.url(f"/finance/summary?property_id={annex['id']}")).json()
    assert [t["currency"] for t in only_annex["totals"]] == ["JPY", "USD"]


def test_summary_of_an_empty_org(tenant):
    summary = tenant.viewer.get(tenant.url("/finance/summary")).json()
    assert summary["totals"] == [] and summary["properties"] == []


def test_the_fast_renderer_matches_the_documented_serializer(tenant):
    from finance.api.serializers import EntryOutput, entry_output

    _post(tenant, amount="1234567890.10", description="ünïcode")
    _post(tenant, "revenues", amount="0.01")
    for model in (Expense, Revenue):
        entry = model.objects.get()
        assert entry_output(entry) == dict(EntryOutput(entry).data)
