"""`make run`'s demo data (`manage.py bootstrap_demo`) with two real database clusters
(`CLUSTER_COUNT=2 make run`): the owner gets one demo org on each cluster, placed there,
and a second run reuses them."""

import io
import re
import uuid

import pytest
from django.core.management import call_command
from django.db import connections

from directory.models import OrgPlacement
from tests.cluster_support import NAME, PRIMARY

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _run() -> dict[str, str]:
    out = io.StringIO()
    call_command("bootstrap_demo", stdout=out)
    return {
        cluster: org
        for org, cluster in re.findall(r"Org\s+(\S+)\s+\(.*database cluster (\w+)\)", out.getvalue())
    }


def test_the_demo_owner_gets_an_org_on_each_cluster(second_cluster):
    first = _run()
    assert set(first) == {"main", NAME}
    assert dict(OrgPlacement.objects.values_list("org_id", "cluster")) == {
        uuid.UUID(org): cluster for cluster, org in first.items()
    }
    with connections[PRIMARY].cursor() as cursor:
        cursor.execute("SELECT id::text FROM tenancy_organization")
        assert cursor.fetchall() == [(first[NAME],)]
        cursor.execute("SELECT count(*) FROM tenancy_property WHERE org_id = %s", [first[NAME]])
        assert cursor.fetchone() == (1,)
    assert _run() == first  # a second run reuses both orgs
