"""Nothing dead in monitoring: label values stay within their declared sets, the edge
hit-rate metric is fed from Varnish's counters, and LOG_PARTITION_ROUTING logs each
real routing decision with its reason."""

import json
import logging

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics import MetricWrapperBase

from edgecache.stats import varnish_counters
from monitoring.exposition import prometheus_text
from monitoring.metrics import ROUTER_REASONS, undeclared_label_values

Declared = dict[MetricWrapperBase, dict[str, tuple[str, ...] | None]]


def test_the_check_reports_a_label_value_outside_the_declared_set():
    registry = CollectorRegistry()
    outcomes = Counter("example_total", "An example.", ["outcome"], registry=registry)
    declared: Declared = {outcomes: {"outcome": ("ok", "error")}}
    outcomes.labels("ok").inc()
    assert undeclared_label_values(declared) == []
    outcomes.labels("exploded").inc()
    assert undeclared_label_values(declared) == ["example{outcome='exploded'} not in ('ok', 'error')"]
    wrong_names: Declared = {outcomes: {"result": ("ok",)}}
    assert undeclared_label_values(wrong_names)  # a label the declaration does not know


def test_the_edge_hit_and_miss_counters_in_a_scrape_are_varnishs_own(settings):
    settings.CDN_PROVIDER = "varnish"  # the stack's Varnish (CDN_VARNISH_NAME from .env)
    before = varnish_counters()
    assert before, "the stack's Varnish counters cannot be read"
    lines = prometheus_text().decode().splitlines()
    after = varnish_counters()
    assert after is not None, "the stack's Varnish counters cannot be read"
    for result in ("hit", "miss"):
        (line,) = [
            item for item in lines if item.startswith(f'edge_cache_requests_total{{result="{result}"}}')
        ]
        value = float(line.split()[-1])
        assert before[f"MAIN.cache_{result}"] <= value <= after[f"MAIN.cache_{result}"]


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def routing_lines(settings):
    settings.LOG_PARTITION_ROUTING = True
    records: list[logging.LogRecord] = []
    handler = _Collect(records)
    logger = logging.getLogger("routing")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_log_partition_routing_logs_every_decision_of_a_request_with_its_reason(tenant, routing_lines):
    created = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json")
    assert created.status_code == 201
    write_lines = list(routing_lines)
    routing_lines.clear()
    assert tenant.viewer.get(tenant.url("/expenses")).status_code == 200
    read_lines = list(routing_lines)
    for record in write_lines + read_lines:
        assert record.reason in ROUTER_REASONS, record.reason
        assert record.db_alias and record.model
        json.dumps({"alias": record.db_alias, "org": record.org_id})  # loggable as JSON
    writes = [r for r in write_lines if r.operation == "write"]
    assert writes and all(r.reason == "write" and r.db_alias == "default" for r in writes)
    assert any(r.model == "finance.Expense" and r.org_id == str(tenant.org.id) for r in writes), [
        (r.model, r.org_id) for r in writes
    ]
    # The POST's own reads are pinned to the primary, and say so.
    assert {r.reason for r in write_lines if r.operation == "read"} <= {"write_request", "after_write"}
    assert read_lines and all(r.operation == "read" for r in read_lines)


def test_routing_decisions_are_not_logged_when_the_setting_is_off(tenant, settings, routing_lines):
    settings.LOG_PARTITION_ROUTING = False
    assert tenant.viewer.get(tenant.url("/expenses")).status_code == 200
    assert routing_lines == []
