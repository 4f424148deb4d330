"""Read a live server's Prometheus endpoint the way Prometheus does: over HTTP, with
the metrics bearer token, parsed by prometheus_client's own text parser."""

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

METRICS_TOKEN = "test-metrics-token-0123456789"
SCRAPE_PATH = "/v1/system/metrics/prometheus"


def scrape_samples(base_url: str) -> list[Sample]:
    response = httpx.get(
        base_url + SCRAPE_PATH, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def sample_value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def aggregated(base_url: str) -> dict:
    response = httpx.get(
        base_url + "/v1/system/metrics/aggregated",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()
