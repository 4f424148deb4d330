"""manage.py seed_orgs: bulk tenants for load tests (CONTRACT §9)."""

import csv

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import User
from finance.models import DailyTotal, Expense, Revenue
from finance.totals_repair import org_totals_verify
from monitoring.partitions import partitions_report
from tenancy.models import Membership, Organization, Property

pytestmark = pytest.mark.django_db


def _seed(tmp_path, orgs: int, **extra) -> list[dict[str, str]]:
    out = tmp_path / "creds.csv"
    call_command(
        "seed_orgs", orgs=orgs, properties_per_org=2, users_per_org=3, entries_per_property=4,
        prefix="t", credentials_out=str(out), batch_orgs=3, **extra,
    )  # fmt: skip
    with open(out) as f:
        return list(csv.DictReader(f))


def test_seeds_every_row_and_writes_working_credentials(tmp_path):
    rows = _seed(tmp_path, 7)
    assert Organization.objects.count() == 7
    assert Property.objects.count() == 14
    assert User.objects.count() == 21
    assert Membership.objects.count() == 21
    assert sorted(Membership.objects.filter(org__name__endswith=" 0").values_list("role", flat=True)) == [
        "manager", "owner", "viewer",
    ]  # fmt: skip
    assert Expense.objects.count() == Revenue.objects.count() == 14 * 2
    assert partitions_report()["ok"] is True
    # The summary's per-day totals were seeded with the rows: every org verifies clean.
    assert DailyTotal.objects.exists()
    assert all(org_totals_verify(org_id=org.id) == [] for org in Organization.objects.all())

    assert len(rows) == 21
    assert list(rows[0]) == ["org_id", "username", "password", "token", "property_ids"]
    owner = next(r for r in rows if r["username"] == "t-o3-u0")
    assert len(owner["property_ids"].split()) == 2
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {owner['token']}")
    listed = client.get(f"/v1/orgs/{owner['org_id']}/expenses").json()["results"]
    assert len(listed) == 4 and {e["property_id"] for e in listed} == set(owner["property_ids"].split())
    # The shared password works for a real login.
    login = APIClient().post(
        "/v1/auth/token", {"username": "t-o6-u2", "password": owner["password"]}, format="json"
    )
    assert login.status_code == 200


def test_a_re_run_continues_and_never_duplicates(tmp_path):
    _seed(tmp_path, 5)
    again = _seed(tmp_path, 5)
    assert Organization.objects.count() == 5 and len(again) == 15
    more = _seed(tmp_path, 8)
    assert Organization.objects.count() == 8 and User.objects.count() == 24 and len(more) == 24
    assert len({r["username"] for r in more}) == 24


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(CommandError):
        call_command("seed_orgs", orgs=1, prefix="bad_prefix%")
    with pytest.raises(CommandError):
        call_command("seed_orgs", orgs=-1)
    with pytest.raises(CommandError):
        call_command("seed_orgs", orgs=1, users_per_org=0)
    assert Organization.objects.count() == 0
