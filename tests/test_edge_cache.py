"""CONTRACT §6 through the real Varnish (the shipped VCL) in front of a real gunicorn.

Every test talks HTTP to varnishd on a free port; the origin is gunicorn on the test
database, purging that same varnishd. Data is committed (transaction=True) so the
server process sees it.
"""

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from knox.models import AuthToken

from edgecache.backends.varnish import VarnishPurge
from edgecache.models import PurgeQueueEntry
from edgecache.purge import breaker_reset
from edgecache.tags import org_section_tag, org_tag
from finance.models import Expense
from tenancy.models import Membership
from tests import conftest
from tests.live_server import free_port, outbox_worker, running_server
from tests.tokens import token_for
from tests.varnish_server import DEPLOY, Varnish, readable_copy_of_deploy, running_varnish

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

AUTH_TTL = 1  # seconds the edge remembers "token T may read org O" in these tests


@dataclass
class Edge:
    origin: str
    varnish: Varnish

    @property
    def url(self) -> str:
        return self.varnish.base_url


@pytest.fixture(scope="module")
def edge(django_db_setup: None, django_db_blocker: Any) -> Iterator[Edge]:
    varnish_port = free_port()
    env = {
        "CDN_PROVIDER": "varnish",
        "CDN_VARNISH_URLS": f"http://127.0.0.1:{varnish_port}",
        "CDN_AUTH_TTL_SECONDS": str(AUTH_TTL),
        "CDN_PURGE_BREAKER_SECONDS": "0",
    }
    with django_db_blocker.unblock(), running_server(conftest.test_database_url(), **env) as origin:
        rest_port = int(origin.rsplit(":", 1)[1])
        with running_varnish(rest_port=rest_port, port=varnish_port) as varnish:
            yield Edge(origin=origin, varnish=varnish)


@pytest.fixture
def edge_settings(settings: Any, edge: Edge) -> Edge:
    """This test process purges the same Varnish as the server does."""
    settings.CDN_PROVIDER = "varnish"
    settings.CDN_VARNISH_URLS = [edge.url]
    breaker_reset()
    return edge


def auth(user: Any) -> dict[str, str]:
    return {"Authorization": f"Token {token_for(user)}"}


def summary_revenue(response: httpx.Response) -> Decimal:
    totals = response.json()["totals"]
    return Decimal(totals[0]["revenue"]) if totals else Decimal("0.00")


def test_a_second_identical_get_is_a_hit_shared_by_members_and_tags_never_reach_clients(edge, tenant):
    path = tenant.url("/finance/summary")
    owner, viewer = auth(tenant.users["owner"]), auth(tenant.users["viewer"])
    before = edge.varnish.counters()

    first = httpx.get(edge.url + path, headers=owner)
    second = httpx.get(edge.url + path, headers=owner)
    other_member = httpx.get(edge.url + path, headers=viewer)

    assert (first.status_code, second.status_code, other_member.status_code) == (200, 200, 200)
    assert first.headers["X-Cache"] == "MISS"
    assert second.headers["X-Cache"] == "HIT"
    assert other_member.headers["X-Cache"] == "HIT"  # one copy for all members of the org
    assert int(second.headers["Age"]) >= 0
    assert first.content == second.content == other_member.content
    after = edge.varnish.counters()
    assert after["MAIN.cache_hit"] - before["MAIN.cache_hit"] >= 2
    for response in (first, second):
        for header in ("Surrogate-Key", "xkey", "Cache-Tag"):
            assert header not in response.headers
        assert response.headers["Cache-Control"] == "private, no-cache"
        vary = {v.strip().lower() for v in response.headers.get("Vary", "").split(",")}
        assert vary <= {"accept-encoding", "origin"}  # nothing per user or per token

    # What the origin tells the edge.
    direct = httpx.get(edge.origin + path, headers=owner)
    org = tenant.org.id
    assert direct.headers["Cache-Control"] == "max-age=0, s-maxage=60"
    assert direct.headers["Surrogate-Key"] == direct.headers["xkey"] == f"org-{org} org-{org}-summary"
    assert direct.headers["Cache-Tag"] == f"org-{org},org-{org}-summary"


@pytest.mark.parametrize(
    ("suffix", "tags"),
    [
        ("/expenses", ["expenses"]),
        ("/revenues", ["revenues"]),
        ("/properties", ["properties"]),
    ],
)
def test_org_lists_carry_org_prefixed_tags(edge, tenant, suffix, tags):
    response = httpx.get(edge.origin + tenant.url(suffix), headers=auth(tenant.users["viewer"]))
    org = tenant.org.id
    assert response.headers["xkey"].split() == [f"org-{org}", *(f"org-{org}-{tag}" for tag in tags)]


def test_details_carry_tags_and_property_detail_names_its_property(edge, tenant):
    owner = auth(tenant.users["owner"])
    created = httpx.post(
        edge.url + tenant.url("/expenses"), json=tenant.entry_payload(), headers=owner
    ).json()
    detail = httpx.get(edge.origin + tenant.url(f"/expenses/{created['id']}"), headers=owner)
    prop = httpx.get(edge.origin + tenant.url(f"/properties/{tenant.property.id}"), headers=owner)
    org = tenant.org.id
    assert detail.headers["xkey"].split() == [f"org-{org}", f"org-{org}-expenses"]
    assert prop.headers["xkey"].split() == [
        f"org-{org}",
        f"org-{org}-properties",
        f"property-{tenant.property.id}",
    ]


def test_a_write_is_visible_to_the_next_read_through_the_cache_200_times_in_a_row(edge, tenant):
    owner = auth(tenant.users["owner"])
    summary, latest = tenant.url("/finance/summary"), tenant.url("/revenues?page_size=1")
    with httpx.Client(base_url=edge.url, headers=owner) as client:
        expected = summary_revenue(client.get(summary))
        refills = 0
        for i in range(200):
            before = client.get(summary)
            if before.headers["X-Cache"] == "MISS":
                # The previous fill started within the millisecond after the write's purge
                # and was not stored (VCL: a purge counts to the end of its millisecond):
                # the copy this one fetched is stored.
                refills += 1
                before = client.get(summary)
            assert before.headers["X-Cache"] == "HIT"  # the old total is cached...
            assert summary_revenue(before) == expected
            amount = Decimal(i + 1) / 100
            created = client.post(tenant.url("/revenues"), json=tenant.entry_payload(amount=str(amount)))
            assert created.status_code == 201
            expected += amount
            fresh = client.get(summary)  # ...and never served after the write returned
            assert summary_revenue(fresh) == expected, f"stale summary after write {i}"
            assert fresh.headers["X-Cache"] == "MISS"
            assert client.get(latest).json()["results"][0]["id"] == created.json()["id"]
        assert refills <= 20, f"{refills} of 200 fills after a write were not stored"

        entry = created.json()
        detail = tenant.url(f"/revenues/{entry['id']}")
        for i in range(20):
            assert client.get(detail).status_code == 200
            patched = client.patch(detail, json={"amount": f"{i + 1}.25"})
            assert patched.status_code == 200
            assert client.get(detail).json()["amount"] == f"{i + 1}.25"
        assert client.delete(detail).status_code == 204
        assert client.get(detail).status_code == 404
        assert entry["id"] not in {
            row["id"] for row in client.get(tenant.url("/revenues?page_size=200")).json()["results"]
        }


def test_non_members_and_bad_tokens_never_get_a_cached_org_object_whatever_the_order(
    edge, tenant, other_tenant
):
    callers = {
        "member": (auth(tenant.users["viewer"]), 200),
        "member of another org": (auth(other_tenant.users["owner"]), 404),
        "no token": ({}, 401),
        "bad token": ({"Authorization": "Token not-a-real-token"}, 401),
    }
    for n, order in enumerate(itertools.permutations(callers)):
        for path in (
            tenant.url(f"/finance/summary?to=2030-01-{n + 1:02d}"),
            tenant.url(f"/expenses?to=2030-01-{n + 1:02d}"),
        ):
            member_body = None
            for _round in range(2):  # the second round finds everything cached that may be
                for name in order:
                    headers, status = callers[name]
                    response = httpx.get(edge.url + path, headers=headers)
                    assert response.status_code == status, (order, name, path)
                    if name == "member":
                        member_body = member_body or response.content
                        assert response.content == member_body
                    else:
                        assert response.headers["X-Cache"] == "PASS", (order, name)
                        assert "results" not in response.json() and "totals" not in response.json()
    # The member's object really was cached all along.
    assert httpx.get(edge.url + path, headers=callers["member"][0]).headers["X-Cache"] == "HIT"


def test_a_removed_member_or_revoked_token_is_refused_within_the_auth_ttl(edge, tenant):
    path = tenant.url("/finance/summary")
    viewer, manager = auth(tenant.users["viewer"]), auth(tenant.users["manager"])
    assert httpx.get(edge.url + path, headers=viewer).status_code == 200
    assert httpx.get(edge.url + path, headers=manager).status_code == 200

    Membership.objects.filter(org=tenant.org, user=tenant.users["viewer"]).delete()
    AuthToken.objects.filter(user=tenant.users["manager"]).delete()
    time.sleep(AUTH_TTL + 0.2)

    assert httpx.get(edge.url + path, headers=viewer).status_code == 404
    assert httpx.get(edge.url + path, headers=manager).status_code == 401
    assert httpx.get(edge.url + path, headers=auth(tenant.users["owner"])).headers["X-Cache"] == "HIT"


def test_purging_org_a_leaves_org_b_cached(edge_settings, tenant, other_tenant):
    edge = edge_settings
    a, b = auth(tenant.users["owner"]), auth(other_tenant.users["owner"])
    paths = {
        "a summary": (tenant.url("/finance/summary"), a),
        "a expenses": (tenant.url("/expenses"), a),
        "b summary": (other_tenant.url("/finance/summary"), b),
        "b expenses": (other_tenant.url("/expenses"), b),
    }

    def cache_states() -> dict[str, str]:
        return {name: httpx.get(edge.url + p, headers=h).headers["X-Cache"] for name, (p, h) in paths.items()}

    cache_states()
    assert set(cache_states().values()) == {"HIT"}
    # A copy fetched in the second before a purge of its org is fetched again (it may
    # be a fill that raced the purge: docs/edge-cache.md); these are older than that.
    time.sleep(1.1)

    VarnishPurge().purge([org_section_tag(tenant.org.id, "expenses")])
    assert cache_states() == {
        "a summary": "HIT",
        "a expenses": "MISS",
        "b summary": "HIT",
        "b expenses": "HIT",
    }

    VarnishPurge().purge([org_tag(tenant.org.id)])
    assert cache_states() == {
        "a summary": "MISS",
        "a expenses": "MISS",
        "b summary": "HIT",
        "b expenses": "HIT",
    }


def test_post_patch_delete_are_never_cached_and_keep_their_method(edge, tenant):
    owner = auth(tenant.users["owner"])
    with httpx.Client(base_url=edge.url, headers=owner) as client:
        client.get(tenant.url("/expenses"))  # a cached GET on the same URL must not answer a POST
        first = client.post(tenant.url("/expenses"), json=tenant.entry_payload())
        second = client.post(tenant.url("/expenses"), json=tenant.entry_payload())
        assert (first.status_code, second.status_code) == (201, 201)
        assert first.json()["id"] != second.json()["id"]
        assert first.headers["X-Cache"] == second.headers["X-Cache"] == "PASS"
        assert first.headers["Cache-Control"] == "private, no-store"
        assert "xkey" not in first.headers

        url = tenant.url(f"/expenses/{first.json()['id']}")
        client.get(url)
        patched = client.patch(url, json={"amount": "99.99"})
        assert patched.status_code == 200 and patched.json()["amount"] == "99.99"
        assert patched.headers["X-Cache"] == "PASS"
        deleted = client.delete(url)
        assert deleted.status_code == 204
        assert client.delete(url).status_code == 404  # really went to the origin again

    assert list(Expense.objects.filter(org=tenant.org).values_list("id", flat=True)) == [
        uuid.UUID(second.json()["id"])
    ]
    assert Expense.objects.get(org=tenant.org).amount == Decimal("12.50")


def test_varnish_stopped_writes_succeed_and_queued_purges_go_out_after_restart(edge_settings, tenant):
    edge = edge_settings
    owner = auth(tenant.users["owner"])
    expenses = tenant.url("/expenses")
    PurgeQueueEntry.objects.all().delete()
    edge.varnish.stop()
    try:
        started = time.monotonic()
        created = httpx.post(edge.origin + expenses, json=tenant.entry_payload(), headers=owner)
        assert created.status_code == 201
        assert time.monotonic() - started < 2
        queued = list(PurgeQueueEntry.objects.values_list("tags", flat=True))
        assert queued == [[f"org-{tenant.org.id}-expenses", f"org-{tenant.org.id}-summary"]]
    finally:
        edge.varnish.start()

    # The restarted edge caches again (its memory is new: this copy already has the write)...
    assert httpx.get(edge.url + expenses, headers=owner).headers["X-Cache"] == "MISS"
    assert httpx.get(edge.url + expenses, headers=owner).headers["X-Cache"] == "HIT"
    # ...and the queued purge, sent by the retry command, reaches it.
    call_command("cdn_purge_retry")
    assert not PurgeQueueEntry.objects.exists()
    assert httpx.get(edge.url + expenses, headers=owner).headers["X-Cache"] == "MISS"


@pytest.mark.parametrize("case", sorted(p.name for p in (DEPLOY / "tests").glob("*.vtc")))
def test_varnishtest_cases_for_the_shipped_vcl(case):
    tmp_path = Path(tempfile.mkdtemp(prefix="edge-vtc-"))  # pytest's tmp_path is 0700
    deploy = readable_copy_of_deploy(tmp_path)
    result = subprocess.run(
        ["varnishtest", "-q", f"-Ddeploy={deploy}", str(deploy / "tests" / case)],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    shutil.rmtree(tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_shipped_vcl_compiles_with_the_rendered_backends():
    from tests.varnish_server import render_backends

    tmp_path = Path(tempfile.mkdtemp(prefix="edge-vcl-"))
    deploy = readable_copy_of_deploy(tmp_path)
    (deploy / "edge-backends.vcl").write_text(render_backends(rest_port=8000, realtime_port=8001))
    result = subprocess.run(
        ["varnishd", "-C", "-f", str(deploy / "default.vcl"), "-p", f"vcl_path={deploy}"],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    shutil.rmtree(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_cache_hit_ratio_reads_the_running_varnish(edge_settings, settings, tenant):
    from edgecache.stats import cache_hit_ratio, varnish_counters

    settings.CDN_VARNISH_NAME = edge_settings.varnish.name
    path, owner = tenant.url("/properties"), auth(tenant.users["owner"])
    for _ in range(5):
        httpx.get(edge_settings.url + path, headers=owner)
    counters = varnish_counters()
    assert counters is not None and counters["MAIN.cache_hit"] >= 8  # 4 data hits + 4 preflight hits
    ratio = cache_hit_ratio()
    assert ratio == counters["MAIN.cache_hit"] / (counters["MAIN.cache_hit"] + counters["MAIN.cache_miss"])
    assert 0 < ratio < 1

    settings.CDN_VARNISH_NAME = "/nonexistent/varnish"
    assert cache_hit_ratio() is None  # monitoring shows "unknown", never an error


def test_a_write_is_visible_at_once_even_while_other_members_refill_the_cache(edge, tenant):
    """Readers keep refilling the summary while the owner writes: a fill that read the
    database before a write committed must not be stored after that write's purge."""
    summary = tenant.url("/finance/summary")
    owner, viewer = auth(tenant.users["owner"]), auth(tenant.users["viewer"])
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(base_url=edge.url, headers=viewer) as client:
            while not stop.is_set():
                client.get(summary)

    readers = [threading.Thread(target=reader) for _ in range(int(os.environ.get("EDGE_RACE_READERS", "4")))]
    for thread in readers:
        thread.start()
    stale = []
    try:
        with httpx.Client(base_url=edge.url, headers=owner) as client:
            expected = summary_revenue(client.get(summary))
            for i in range(int(os.environ.get("EDGE_RACE_WRITES", "100"))):
                assert (
                    client.post(tenant.url("/revenues"), json=tenant.entry_payload(amount="1.00")).status_code
                    == 201
                )
                expected += Decimal("1.00")
                seen = summary_revenue(client.get(summary))
                if seen != expected:
                    stale.append((i, str(seen), str(expected)))
                    expected = seen if seen > expected else expected
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert stale == []


def test_a_hung_varnish_costs_a_write_one_purge_timeout_and_the_purge_is_queued(edge_settings, tenant):
    edge = edge_settings
    owner = auth(tenant.users["owner"])
    PurgeQueueEntry.objects.all().delete()
    children = subprocess.run(
        ["pgrep", "-P", str(edge.varnish.pid)], capture_output=True, text=True, check=False
    )
    paused = [edge.varnish.pid, *(int(pid) for pid in children.stdout.split())]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        created = httpx.post(
            edge.origin + tenant.url("/expenses"), json=tenant.entry_payload(), headers=owner
        )
        elapsed = time.monotonic() - started
        assert created.status_code == 201
        assert elapsed < 3  # CDN_PURGE_TIMEOUT_SECONDS (1 s) plus the write itself
        assert list(PurgeQueueEntry.objects.values_list("tags", flat=True)) == [
            [f"org-{tenant.org.id}-expenses", f"org-{tenant.org.id}-summary"]
        ]
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    call_command("cdn_purge_retry")
    assert not PurgeQueueEntry.objects.exists()


def test_the_outbox_worker_retries_queued_purges_so_no_cron_is_needed(edge_settings, tenant):
    """A purge the edge refused waits in the durable queue; the outbox worker that
    bin/serve runs sends it on its next maintenance round, without `cdn_purge_retry`."""
    from tests.replica_support import wait_until

    edge = edge_settings
    owner = auth(tenant.users["owner"])
    expenses = tenant.url("/expenses")
    PurgeQueueEntry.objects.all().delete()
    assert httpx.get(edge.url + expenses, headers=owner).headers["X-Cache"] == "MISS"
    assert httpx.get(edge.url + expenses, headers=owner).headers["X-Cache"] == "HIT"
    # The edge is away while a write's purge is due: the purge is queued, the copy stays.
    tags = [f"org-{tenant.org.id}-expenses", f"org-{tenant.org.id}-summary"]
    PurgeQueueEntry.objects.create(tags=tags, soft=False, last_error="edge away (test)")
    assert httpx.get(edge.url + expenses, headers=owner).headers["X-Cache"] == "HIT"
    worker_env = {
        "CDN_PROVIDER": "varnish",
        "CDN_VARNISH_URLS": edge.url,
        "CHANGELOG_MAINTENANCE_SECONDS": "0.2",
    }
    with outbox_worker(conftest.test_database_url(), **worker_env):
        wait_until(lambda: not PurgeQueueEntry.objects.exists(), timeout=20)
    assert httpx.get(edge.url + expenses, headers=owner).headers["X-Cache"] == "MISS"


def test_the_slo_endpoint_reports_the_edge_hit_rate_from_varnish(edge_settings, settings, tenant, client_for):
    """Hits never reach the origin, so the aggregated endpoint reads Varnish's counters."""
    settings.CDN_VARNISH_NAME = edge_settings.varnish.name
    settings.METRICS_TOKEN = "edge-slo-test-token"
    staff = client_for(None)
    staff.credentials(HTTP_AUTHORIZATION="Bearer edge-slo-test-token")
    before = staff.get("/v1/system/metrics/aggregated").json()["cache"]
    path, owner = tenant.url("/finance/summary"), auth(tenant.users["owner"])
    for _ in range(20):
        assert httpx.get(edge_settings.url + path, headers=owner).status_code == 200
    response = staff.get("/v1/system/metrics/aggregated")
    assert response.status_code == 200, response.content
    after = response.json()
    assert after["cache"]["hits"] >= before["hits"] + 19
    assert after["cache"]["hit_rate"] is not None and after["cache"]["hit_rate"] > 0
    entry = next(s for s in after["slo"] if s["name"] == "cache_hit_rate")
    assert entry["current"] == after["cache"]["hit_rate"]
