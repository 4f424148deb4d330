"""Per-day totals behind the finance summary (CONTRACT §12, §9 `finance_totals`):
kept in each write's transaction by concurrent writers, verified in a snapshot,
repaired while writers run without double counting; the summary with its filters and
`group_by`. Real Postgres, services in threads with their own connections."""

import datetime
import io
import random
import threading
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from operator import itemgetter
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, connections

from finance.models import DailyTotal, Expense, FinanceEntry, Revenue
from finance.selectors import SummaryFilters, finance_summary
from finance.services import EntryGone, entry_create, entry_delete, entry_update
from finance.totals import TotalKey
from finance.totals_repair import org_total_key_rebuild, org_totals_verify
from tenancy.models import Property
from tests.replica_support import wait_until

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__")]

DAYS = [datetime.date(2026, 1, 30) + datetime.timedelta(days=n) for n in range(5)]  # spans two months
MODELS: list[type[FinanceEntry]] = [Expense, Revenue]


def _expected_summary(org_id: Any, filters: SummaryFilters) -> dict[str, Any]:
    """The summary computed from the rows themselves, in Python: what the totals must give."""
    sums: dict[Any, dict[str, dict[str, Decimal]]] = defaultdict(
        lambda: defaultdict(lambda: {"revenue": Decimal(0), "expense": Decimal(0)})
    )
    for model in MODELS:
        for entry in model.objects.filter(org_id=org_id):
            if filters.property_id and entry.property_id != filters.property_id:
                continue
            if filters.date_from and entry.occurred_on < filters.date_from:
                continue
            if filters.date_to and entry.occurred_on > filters.date_to:
                continue
            groups: list[Any] = [None, entry.property_id]
            if filters.group_by == "day":
                groups.append(("period", entry.occurred_on.isoformat()))
            elif filters.group_by == "month":
                groups.append(("period", entry.occurred_on.isoformat()[:7]))
            for group in groups:
                sums[group][entry.currency][model.kind] += entry.amount

    def totals(group: Any) -> list[dict[str, str]]:
        return [
            {
                "currency": currency,
                "revenue": f"{amounts['revenue']:.2f}",
                "expense": f"{amounts['expense']:.2f}",
                "net": f"{amounts['revenue'] - amounts['expense']:.2f}",
            }
            for currency, amounts in sorted(sums[group].items())
        ]

    expected: dict[str, Any] = {
        "from": filters.date_from,
        "to": filters.date_to,
        "property_id": filters.property_id,
        "totals": totals(None) if None in sums else [],
        "properties": [
            {"property_id": group, "totals": totals(group)}
            for group in sorted((g for g in sums if g is not None and not isinstance(g, tuple)), key=str)
        ],
    }
    if filters.group_by:
        expected["group_by"] = filters.group_by
        expected["periods"] = [
            {"period": group[1], "totals": totals(group)}
            for group in sorted(g for g in sums if isinstance(g, tuple))
        ]
    return expected


class RandomWriter:
    """Creates, updates (amount, day, property, currency) and deletes the org's entries
    through the services, as the API, sync and admin do. Each thread has its own
    database connection, closed at the end."""

    def __init__(self, tenant: Any, properties: list[Property], seed: int, keys: list[tuple] | None = None):
        self.tenant, self.properties = tenant, properties
        self.rng = random.Random(seed)
        self.keys = keys  # restrict to these (property, day, currency) when set
        self.errors: list[BaseException] = []
        self.done = 0

    def _key(self) -> tuple[Property, datetime.date, str]:
        if self.keys:
            return self.rng.choice(self.keys)
        return self.rng.choice(self.properties), self.rng.choice(DAYS), self.rng.choice(["EUR", "USD"])

    def _amount(self) -> Decimal:
        return Decimal(self.rng.randint(1, 99_999)) / 100

    def step(self) -> None:
        model = self.rng.choice(MODELS)
        existing = list(model.objects.filter(org_id=self.tenant.org.id).values_list("id", flat=True)[:50])
        action = self.rng.random()
        if action < 0.45 or not existing:
            prop, day, currency = self._key()
            entry_create(
                model=model, org=self.tenant.org, created_by=self.tenant.users["owner"], property_id=prop.id,
                amount=self._amount(), currency=currency, category="rooms", occurred_on=day,
            )  # fmt: skip
            return
        entry = model.objects.filter(org_id=self.tenant.org.id, id=self.rng.choice(existing)).first()
        if entry is None:
            return  # deleted by another writer since
        try:
            if action < 0.8:
                prop, day, currency = self._key()
                changes: dict[str, Any] = self.rng.choice(
                    [
                        {"amount": self._amount()},
                        {"occurred_on": day},
                        {"property": prop},
                        {"currency": currency},
                        {"amount": self._amount(), "occurred_on": day, "property": prop},
                        {"description": "only the text"},
                    ]
                )
                entry_update(entry=entry, changes=changes)
            else:
                entry_delete(entry=entry)
        except EntryGone:
            pass

    def run(self, steps: int | None = None, until: threading.Event | None = None) -> None:
        try:
            while (steps is None or self.done < steps) and not (until and until.is_set()):
                self.step()
                self.done += 1
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            connections.close_all()


def _run_writers(writers: list[RandomWriter], **kwargs: Any) -> list[threading.Thread]:
    threads = [threading.Thread(target=w.run, kwargs=kwargs) for w in writers]
    for thread in threads:
        thread.start()
    return threads


def _join(threads: list[threading.Thread], writers: list[RandomWriter]) -> None:
    for thread in threads:
        thread.join(timeout=600)
        assert not thread.is_alive(), "a writer did not finish"
    assert [w.errors for w in writers] == [[] for _ in writers]


def _verify_output() -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("finance_totals", "verify", stdout=out, stderr=io.StringIO())
    except SystemExit as exit_:
        assert isinstance(exit_.code, int), exit_.code
        return exit_.code, out.getvalue()
    return 0, out.getvalue()


def _filters_to_check(tenant: Any, second: Property) -> list[SummaryFilters]:
    return [
        SummaryFilters(),
        SummaryFilters(group_by="day"),
        SummaryFilters(group_by="month"),
        SummaryFilters(property_id=second.id),
        SummaryFilters(date_from=DAYS[1], date_to=DAYS[3]),
        SummaryFilters(date_from=DAYS[2], property_id=tenant.property.id, group_by="month"),
    ]


@pytest.fixture
def second_property(tenant: Any) -> Property:
    return Property.objects.create(org=tenant.org, name="Annex", currency="USD", timezone="UTC")


def test_summary_equals_the_rows_after_concurrent_random_writes(tenant, other_tenant, second_property):
    properties = [tenant.property, second_property]
    writers = [RandomWriter(tenant, properties, seed=n) for n in range(6)]
    writers.append(RandomWriter(other_tenant, [other_tenant.property], seed=99))  # another org alongside
    _join(_run_writers(writers, steps=70), writers)

    assert Expense.objects.filter(org_id=tenant.org.id).exists()
    assert Revenue.objects.filter(org_id=tenant.org.id).exists()
    for filters in _filters_to_check(tenant, second_property):
        assert finance_summary(org=tenant.org, filters=filters) == _expected_summary(
            tenant.org.id, filters
        ), filters
    assert org_totals_verify(org_id=tenant.org.id) == []
    assert _verify_output()[0] == 0

    # The API answers from the same totals.
    body = tenant.viewer.get(tenant.url("/finance/summary?group_by=month")).json()
    expected = _expected_summary(tenant.org.id, SummaryFilters(group_by="month"))
    assert body["totals"] == expected["totals"] and body["periods"] == expected["periods"]


def _total_row(key: TotalKey) -> tuple[Decimal, int] | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT total, count FROM finance_daily_total WHERE org_id = %s AND day = %s AND property_id = %s "
            "AND currency = %s AND kind = %s",
            list(key),
        )
        return cursor.fetchone()


def test_verify_names_a_corrupted_total_and_rebuild_under_writers_restores_it(tenant, second_property):
    owner = tenant.users["owner"]
    for n, (prop, day) in enumerate(
        [(tenant.property, DAYS[0]), (tenant.property, DAYS[1]), (second_property, DAYS[0])]
    ):
        for model in MODELS:
            entry_create(
                model=model, org=tenant.org, created_by=owner, property_id=prop.id, amount=Decimal(f"{10 + n}.25"),
                currency="EUR", category="bar", occurred_on=day,
            )  # fmt: skip
    assert _verify_output() == (0, "ok: every total equals its rows in 1 org(s)\n")

    corrupted = TotalKey(str(tenant.org.id), DAYS[0], str(tenant.property.id), "EUR", "revenue")
    vanished = TotalKey(str(tenant.org.id), DAYS[1], str(tenant.property.id), "EUR", "expense")
    invented = TotalKey(str(tenant.org.id), DAYS[4], str(second_property.id), "GBP", "expense")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE finance_daily_total SET total = total + 1000, count = count + 3 WHERE org_id = %s AND day = %s "
            "AND property_id = %s AND currency = %s AND kind = %s",
            list(corrupted),
        )
        cursor.execute(
            "DELETE FROM finance_daily_total WHERE org_id = %s AND day = %s AND property_id = %s AND currency = %s "
            "AND kind = %s",
            list(vanished),
        )
        cursor.execute(
            "INSERT INTO finance_daily_total (org_id, day, property_id, currency, kind, total, count) "
            "VALUES (%s, %s, %s, %s, %s, 5.00, 1)",
            list(invented),
        )
    code, output = _verify_output()
    assert code == 1
    lines = [line for line in output.splitlines() if line.startswith("differs: ")]
    assert lines == [
        f"differs: org {tenant.org.id} revenue {DAYS[0]} property {tenant.property.id} EUR: "
        "rows 10.25 (1), totals 1010.25 (4)",
        f"differs: org {tenant.org.id} expense {DAYS[1]} property {tenant.property.id} EUR: "
        "rows 11.25 (1), totals 0.00 (0)",
        f"differs: org {tenant.org.id} expense {DAYS[4]} property {second_property.id} GBP: "
        "rows 0.00 (0), totals 5.00 (1)",
    ]
    assert "3 total(s) differ" in output

    # Writers keep hitting exactly the corrupted keys while they are rebuilt, again and
    # again: a refresh that summed outside the writers' lock would lose or double their
    # deltas, and the final comparison would show it.
    hot_keys = [
        (tenant.property, DAYS[0], "EUR"),
        (tenant.property, DAYS[1], "EUR"),
        (second_property, DAYS[4], "GBP"),
    ]
    writers = [
        RandomWriter(tenant, [tenant.property, second_property], seed=n, keys=hot_keys) for n in range(4)
    ]
    stop = threading.Event()
    threads = _run_writers(writers, until=stop)

    def written() -> int:
        return sum(w.done for w in writers)

    rounds = 0

    def forced_rebuild_round() -> bool:
        """Rebuild keys that are already right, racing the writers: must change nothing."""
        nonlocal rounds
        for key in (corrupted, vanished, invented):
            org_total_key_rebuild(key=key)
        rounds += 1
        return rounds >= 30 and written() >= during + 40

    try:
        wait_until(lambda: written() >= 5, timeout=120)
        during = written()
        rebuilt = io.StringIO()
        call_command(
            "finance_totals", "rebuild", "--org", str(tenant.org.id), stdout=rebuilt, stderr=io.StringIO()
        )
        assert f"org {tenant.org.id}: 3 total(s) repaired" in rebuilt.getvalue()
        wait_until(forced_rebuild_round, timeout=300, interval=0)
    finally:
        stop.set()
        _join(threads, writers)

    assert org_totals_verify(org_id=tenant.org.id) == []
    assert _verify_output()[0] == 0
    for filters in _filters_to_check(tenant, second_property):
        assert finance_summary(org=tenant.org, filters=filters) == _expected_summary(
            tenant.org.id, filters
        ), filters


def test_rebuild_prunes_keys_left_empty_by_deletions(tenant):
    entry = entry_create(
        model=Expense, org=tenant.org, created_by=tenant.users["owner"], property_id=tenant.property.id,
        amount=Decimal("4.00"), currency="CHF", category="spa", occurred_on=DAYS[2],
    )  # fmt: skip
    key = TotalKey(str(tenant.org.id), DAYS[2], str(tenant.property.id), "CHF", "expense")
    assert _total_row(key) == (Decimal("4.00"), 1)
    # Deleted over the API: a write outside a request raises no reader's read-your-writes
    # position (docs/replicas.md), so the viewer below could read a replica without it.
    assert tenant.manager.delete(tenant.url(f"/expenses/{entry.id}")).status_code == 204
    assert _total_row(key) == (Decimal("0.00"), 0)  # kept at zero on the write path...
    summary = tenant.viewer.get(tenant.url("/finance/summary")).json()
    assert summary["totals"] == [] and summary["properties"] == []  # ...and invisible to readers
    assert _verify_output()[0] == 0
    out = io.StringIO()
    call_command("finance_totals", "rebuild", stdout=out, stderr=io.StringIO())
    assert "1 empty total(s) pruned" in out.getvalue()
    assert _total_row(key) is None


def _post(tenant: Any, kind: str, **payload: Any) -> dict[str, Any]:
    response = tenant.manager.post(tenant.url(f"/{kind}s"), tenant.entry_payload(**payload), format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_summary_group_by_day_and_month_and_filters_over_the_api(tenant, second_property):
    main, annex = str(tenant.property.id), str(second_property.id)
    _post(tenant, "revenue", amount="100.00", occurred_on="2026-01-31")
    _post(tenant, "expense", amount="30.10", occurred_on="2026-01-31")
    _post(tenant, "revenue", amount="50.00", occurred_on="2026-02-01", currency="USD")
    _post(tenant, "expense", amount="7.05", occurred_on="2026-02-02", property_id=annex)
    moved = _post(tenant, "expense", amount="1.00", occurred_on="2026-02-03")
    gone = _post(tenant, "revenue", amount="999.00", occurred_on="2026-03-01")
    tenant.manager.patch(
        tenant.url(f"/expenses/{moved['id']}"), {"occurred_on": "2026-01-30", "amount": "2.00"}, format="json"
    )
    assert tenant.manager.delete(tenant.url(f"/revenues/{gone['id']}")).status_code == 204

    def summary(query: str) -> dict[str, Any]:
        response = tenant.viewer.get(tenant.url(f"/finance/summary{query}"))
        assert response.status_code == 200, response.content
        return response.json()

    def money(currency: str, revenue: str, expense: str, net: str) -> dict[str, str]:
        return {"currency": currency, "revenue": revenue, "expense": expense, "net": net}

    whole = summary("")
    assert "periods" not in whole and "group_by" not in whole  # the shape stays as before
    assert whole["totals"] == [
        money("EUR", "100.00", "39.15", "60.85"),
        money("USD", "50.00", "0.00", "50.00"),
    ]
    assert whole["properties"] == sorted(
        [
            {
                "property_id": main,
                "totals": [money("EUR", "100.00", "32.10", "67.90"), money("USD", "50.00", "0.00", "50.00")],
            },
            {"property_id": annex, "totals": [money("EUR", "0.00", "7.05", "-7.05")]},
        ],
        key=itemgetter("property_id"),
    )

    by_day = summary("?group_by=day")
    assert by_day["group_by"] == "day" and by_day["totals"] == whole["totals"]
    assert by_day["periods"] == [
        {"period": "2026-01-30", "totals": [money("EUR", "0.00", "2.00", "-2.00")]},
        {"period": "2026-01-31", "totals": [money("EUR", "100.00", "30.10", "69.90")]},
        {"period": "2026-02-01", "totals": [money("USD", "50.00", "0.00", "50.00")]},
        {"period": "2026-02-02", "totals": [money("EUR", "0.00", "7.05", "-7.05")]},
    ]  # 2026-03-01 lost its only entry: no period, not a zero one
    by_month = summary("?group_by=month&from=2026-01-31")
    assert by_month["periods"] == [
        {"period": "2026-01", "totals": [money("EUR", "100.00", "30.10", "69.90")]},
        {
            "period": "2026-02",
            "totals": [money("EUR", "0.00", "7.05", "-7.05"), money("USD", "50.00", "0.00", "50.00")],
        },
    ]
    assert by_month["from"] == "2026-01-31" and by_month["to"] is None

    only_annex = summary(f"?property_id={annex}&group_by=month")
    assert only_annex["totals"] == [money("EUR", "0.00", "7.05", "-7.05")]
    assert [p["property_id"] for p in only_annex["properties"]] == [annex]
    assert only_annex["periods"] == [{"period": "2026-02", "totals": [money("EUR", "0.00", "7.05", "-7.05")]}]
    assert summary("?from=2026-02-01&to=2026-02-01")["totals"] == [money("USD", "50.00", "0.00", "50.00")]
    assert summary("?from=2027-01-01") == {
        "from": "2027-01-01", "to": None, "property_id": None, "totals": [], "properties": [],
    }  # fmt: skip

    for bad in ("?group_by=week", "?category=bar", "?from=2026-02-02&to=2026-02-01", "?from=yesterday",
                "?property_id=not-a-uuid", "?group_by="):  # fmt: skip
        response = tenant.viewer.get(tenant.url(f"/finance/summary{bad}"))
        assert response.status_code == 400, (bad, response.status_code)


def test_the_summary_reads_totals_not_rows(tenant, django_assert_max_num_queries: Callable):
    """The summary's one query touches only the totals table, whatever the row count."""
    for n in range(30):
        entry_create(
            model=Revenue, org=tenant.org, created_by=tenant.users["owner"], property_id=tenant.property.id,
            amount=Decimal("1.00"), currency="EUR", category="rooms", occurred_on=DAYS[n % 2],
        )  # fmt: skip
    with django_assert_max_num_queries(1) as captured:
        summary = finance_summary(org=tenant.org, filters=SummaryFilters(group_by="day"))
    assert summary["totals"][0]["revenue"] == "30.00"
    assert "finance_daily_total" in captured.captured_queries[0]["sql"]
    assert "finance_revenue" not in captured.captured_queries[0]["sql"]
    assert DailyTotal.objects.filter(org_id=tenant.org.id).count() == 2


def _backends_waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_rebuild_waits_for_a_write_in_flight_and_keeps_its_delta(tenant):
    """The race a naive refresh loses: a write has added its delta but not committed
    when the key is recomputed. The rebuild must wait for it and count it once."""
    owner, day = tenant.users["owner"], DAYS[3]

    def create(amount: str) -> None:
        entry_create(
            model=Expense, org=tenant.org, created_by=owner, property_id=tenant.property.id,
            amount=Decimal(amount), currency="EUR", category="energy", occurred_on=day,
        )  # fmt: skip

    create("10.00")
    key = TotalKey(str(tenant.org.id), day, str(tenant.property.id), "EUR", "expense")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE finance_daily_total SET total = 999.00 WHERE org_id = %s AND day = %s AND property_id = %s "
            "AND currency = %s AND kind = %s",
            list(key),
        )

    written, release, errors = threading.Event(), threading.Event(), []

    def slow_writer() -> None:
        try:
            from django.db import transaction

            with transaction.atomic():
                create("5.00")  # entry and its delta written, locks held...
                written.set()
                assert release.wait(120)  # ...and not committed yet
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def rebuild() -> None:
        try:
            org_total_key_rebuild(key=key)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert written.wait(60)
    rebuilder = threading.Thread(target=rebuild)
    rebuilder.start()
    try:
        wait_until(lambda: _backends_waiting_on_a_lock() >= 1, timeout=60)  # the rebuild waits for the writer
        assert rebuilder.is_alive()
    finally:
        release.set()
        writer.join(60)
        rebuilder.join(60)
    assert errors == []
    assert _total_row(key) == (Decimal("15.00"), 2)
    assert org_totals_verify(org_id=tenant.org.id) == []


def test_the_migration_backfills_totals_from_existing_rows(tenant, second_property):
    """0004 creates the table and fills it from the rows already there (every partition)."""
    owner = tenant.users["owner"]
    call_command("migrate", "finance", "0003", verbosity=0)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('finance_daily_total')")
            assert cursor.fetchone() == (None,)
        for n in range(40):
            model = MODELS[n % 2]
            model.objects.bulk_create(
                [
                    model(
                        org=tenant.org, property=[tenant.property, second_property][n % 3 == 0], created_by=owner,
                        amount=Decimal(f"{n}.{n % 100:02d}") + 1, currency=["EUR", "USD"][n % 5 == 0],
                        category="rooms", occurred_on=DAYS[n % len(DAYS)],
                    )
                ]
            )  # fmt: skip
    finally:
        call_command("migrate", "finance", verbosity=0)
    assert DailyTotal.objects.filter(org_id=tenant.org.id).count() > 5
    assert org_totals_verify(org_id=tenant.org.id) == []
    for filters in _filters_to_check(tenant, second_property):
        assert finance_summary(org=tenant.org, filters=filters) == _expected_summary(
            tenant.org.id, filters
        ), filters
