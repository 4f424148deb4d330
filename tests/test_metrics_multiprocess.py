"""Prometheus export under real gunicorn workers: counts add up across processes, and
label sets stay bounded whatever the number of orgs."""

import os
import shutil
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import test_database_url as database_url_for_servers
from tests.live_server import running_server, server_process
from tests.metrics_scrape import METRICS_TOKEN, SCRAPE_PATH, sample_value, scrape_samples

pytestmark = pytest.mark.live

HEALTH = "/v1/system/health"


def _send_on_fresh_connections(url: str, count: int) -> None:
    """Each request on its own connection, 8 at a time, so both workers take some."""

    def one(_: int) -> int:
        return httpx.get(url, headers={"Connection": "close"}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(count)))
    assert statuses == [200] * count


def _health_count_per_process(metrics_dir: Path, scratch: Path) -> dict[int, float]:
    """Read each worker's own counter file alone (copied to a folder of its own)."""
    counts = {}
    for counter_file in metrics_dir.glob("counter_*.db"):
        pid = int(counter_file.stem.split("_")[1])
        alone = scratch / str(pid)
        alone.mkdir()
        shutil.copy(counter_file, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        samples = [s for family in registry.collect() for s in family.samples]
        counts[pid] = sample_value(samples, "api_requests_total", route=HEALTH, method="GET")
    return counts


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_n_requests_over_two_workers_are_scraped_as_exactly_n(django_db_setup, django_db_blocker, tmp_path):
    metrics_dir = tmp_path / "metrics"
    sent = 120
    with (
        django_db_blocker.unblock(),
        server_process(
            database_url_for_servers(),
            ready_path="/v1/schema",  # not the health route this test counts
            WEB_CONCURRENCY="2",
            METRICS_TOKEN=METRICS_TOKEN,
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        ) as server,
    ):
        url = server.url
        _send_on_fresh_connections(url + HEALTH, sent)

        per_process = _health_count_per_process(metrics_dir, tmp_path)
        served_by = [pid for pid, count in per_process.items() if count > 0]
        assert len(served_by) >= 2, f"one worker took all requests: {per_process}"
        assert sum(per_process.values()) == sent

        samples = scrape_samples(url)
        assert (
            sample_value(samples, "api_requests_total", route=HEALTH, method="GET", status_class="2xx")
            == sent
        )
        assert sample_value(samples, "api_request_duration_seconds_count", route=HEALTH, method="GET") == sent
        assert sample_value(samples, "api_request_duration_seconds_bucket", route=HEALTH, le="+Inf") == sent

        # A worker that exits (gunicorn replaces it) takes none of its counts along.
        os.kill(served_by[0], signal.SIGTERM)
        _wait_for(lambda: len(list(metrics_dir.glob("counter_*.db"))) > len(per_process))
        samples = scrape_samples(url)
        assert sample_value(samples, "api_requests_total", route=HEALTH, method="GET") == sent
        # ...and its live-summed gauges are dropped (mark_process_dead in child_exit).
        assert not list(metrics_dir.glob(f"gauge_livesum_{served_by[0]}.db"))
    # The server's start wipes what a previous run left behind.
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")
    with (
        django_db_blocker.unblock(),
        server_process(
            database_url_for_servers(),
            ready_path="/v1/schema",  # not the health route this test counts
            METRICS_TOKEN=METRICS_TOKEN,
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        ) as server,
    ):
        url = server.url
        assert not (metrics_dir / "counter_999999.db").exists()
        assert sample_value(scrape_samples(url), "api_requests_total", route=HEALTH) == 0


def _series(samples: list) -> set[tuple]:
    return {(s.name, tuple(sorted(s.labels.items()))) for s in samples}


@pytest.mark.django_db(transaction=True)
def test_series_count_is_the_same_after_1000_orgs_as_after_10(make_user, client_for):
    from directory.services import placement_create
    from replicas.topology import topology
    from tenancy.models import Membership, Organization, Property
    from tests.tokens import token_for

    user = make_user()
    token = token_for(user)
    orgs = Organization.objects.bulk_create(Organization(name=f"Hotel {n}") for n in range(1000))
    for org in orgs:  # bulk_create sends no post_save: place them as seed_orgs does
        placement_create(org_id=org.id, cluster=topology().home.name)
    Membership.objects.bulk_create(Membership(org=org, user=user, role="owner") for org in orgs)
    properties = Property.objects.bulk_create(
        Property(org=org, name="Main", currency="EUR", timezone="UTC") for org in orgs
    )

    def traffic(client: httpx.Client, chosen: range) -> None:
        for n in chosen:
            org, prop = orgs[n].id, properties[n].id
            assert client.get(f"/v1/orgs/{org}").status_code == 200
            assert (
                client.get(f"/v1/orgs/{org}/expenses", params={"property_id": str(prop)}).status_code == 200
            )
            assert client.get(f"/v1/orgs/{org}/expenses/{uuid.uuid4()}").status_code == 404
            assert client.get(f"/v1/orgs/{uuid.uuid4()}").status_code == 404
            assert client.get(f"/v1/no-such-route/{org}").status_code == 404

    with (
        running_server(
            database_url_for_servers(),
            WEB_CONCURRENCY="2",
            METRICS_TOKEN=METRICS_TOKEN,
            API_RATE_LIMIT_PER_MINUTE="0",  # 5 000 requests of one token: not what is tested
        ) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=30) as client,
    ):
        traffic(client, range(10))
        scrape_samples(url)  # the scrape's own route appears after its first call
        after_10 = scrape_samples(url)
        traffic(client, range(10, 1000))
        after_1000 = scrape_samples(url)
        text = httpx.get(url + SCRAPE_PATH, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text

    assert sample_value(after_1000, "api_requests_total", route="/v1/orgs/<uuid:org_id>") == 2000
    assert _series(after_1000) == _series(after_10)
    assert len(after_1000) == len(after_10)
    assert not any(str(org.id) in text or str(org.id.hex) in text for org in orgs)
    assert str(user.id) not in text and user.username not in text
