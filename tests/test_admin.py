"""Django admin for every model: pages load, filters by org and property work, money
shows its currency, and list pages do not query once per row."""

import pytest
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from finance.models import Expense

pytestmark = pytest.mark.django_db

CHANGELISTS = [
    "/admin/accounts/user/",
    "/admin/tenancy/organization/",
    "/admin/tenancy/membership/",
    "/admin/tenancy/property/",
    "/admin/finance/expense/",
    "/admin/finance/revenue/",
    "/admin/push/device/",
    "/admin/push/delivery/",
]


@pytest.fixture
def staff_browser(make_user) -> Client:
    user = make_user("operator", is_staff=True)
    user.is_superuser = True
    user.save()
    browser = Client()
    browser.force_login(user)
    return browser


def test_every_model_is_registered():
    from django.apps import apps

    from finance.models import DailyTotal

    # Read models are derived data, repaired by `finance_totals rebuild`, never edited by
    # hand (and Django admin cannot show a composite primary key).
    read_models = {DailyTotal}
    ours = [m for m in apps.get_models() if m._meta.app_label in {"accounts", "tenancy", "finance"}]
    assert ours and all(admin.site.is_registered(m) for m in ours if m not in read_models)
    assert not any(admin.site.is_registered(m) for m in read_models)


def _seed(tenant, count: int) -> None:
    for i in range(count):
        for kind in ("expenses", "revenues"):
            payload = tenant.entry_payload(amount=f"{1000 + i}.25", category=f"cat{i % 3}")
            assert tenant.manager.post(tenant.url(f"/{kind}"), payload, format="json").status_code == 201


@pytest.mark.parametrize("path", CHANGELISTS)
def test_list_pages_load_with_a_fixed_number_of_queries(path, staff_browser, make_tenant):
    tenant = make_tenant()
    _seed(tenant, 3)
    with CaptureQueriesContext(connection) as few:
        assert staff_browser.get(path).status_code == 200
    _seed(tenant, 20)
    make_tenant()
    with CaptureQueriesContext(connection) as many:
        assert staff_browser.get(path).status_code == 200
    assert len(few.captured_queries) <= 12
    assert len(many.captured_queries) == len(few.captured_queries)


def test_expense_list_shows_money_with_currency_and_filters_by_org_and_property(
    staff_browser, tenant, other_tenant
):
    _seed(tenant, 2)
    _seed(other_tenant, 1)
    page = staff_browser.get("/admin/finance/expense/").content.decode()
    assert "1,000.25 EUR" in page

    only_a = staff_browser.get(f"/admin/finance/expense/?org_id={tenant.org.id}")
    assert only_a.status_code == 200
    assert only_a.context["cl"].result_count == 2
    by_property = staff_browser.get(f"/admin/finance/expense/?property_id={other_tenant.property.id}")
    assert by_property.context["cl"].result_count == 1
    nonsense = staff_browser.get("/admin/finance/expense/?org_id=not-a-uuid")
    assert nonsense.status_code == 200 and nonsense.context["cl"].result_count == 0


def test_change_pages_and_search_load(staff_browser, tenant):
    _seed(tenant, 1)
    expense = Expense.objects.get()
    assert staff_browser.get(f"/admin/finance/expense/{expense.id}/change/").status_code == 200
    assert staff_browser.get(f"/admin/tenancy/organization/{tenant.org.id}/change/").status_code == 200
    found = staff_browser.get(f"/admin/tenancy/organization/?q={tenant.org.id}")
    assert found.context["cl"].result_count == 1


def test_non_staff_cannot_enter_admin(make_user):
    browser = Client()
    browser.force_login(make_user())
    assert browser.get("/admin/finance/expense/").status_code == 302


def test_unfiltered_lists_use_the_planner_estimate_instead_of_counting_every_row(staff_browser, tenant):
    _seed(tenant, 5)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE finance_expense")
    with CaptureQueriesContext(connection) as unfiltered:
        page = staff_browser.get("/admin/finance/expense/")
    assert page.status_code == 200
    assert not any("COUNT(" in q["sql"].upper() for q in unfiltered.captured_queries)
    assert page.context["cl"].result_count == 5  # the estimate, exact on a freshly analyzed table

    with CaptureQueriesContext(connection) as filtered:
        page = staff_browser.get(f"/admin/finance/expense/?org_id={tenant.org.id}")
    assert any("COUNT(" in q["sql"].upper() for q in filtered.captured_queries)
    assert page.context["cl"].result_count == 5
