"""deploy/prometheus and deploy/grafana are code: promtool checks and unit-tests the
rules, every alert has a firing and a quiet case, the dashboards' queries parse, and
every metric they name exists in a real scrape of a running server.

promtool comes from Debian's `prometheus` package; `make test` installs it through
bin/ensure-tools. Without it these tests fail (they are not skipped)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import test_database_url as database_url_for_servers
from tests.live_server import ROOT, free_port, running_server
from tests.metrics_scrape import METRICS_TOKEN, scrape_samples
from tests.push_support import push_worker
from tests.replica_support import replica_urls, wait_until

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
ALERT_TESTS = PROMETHEUS / "tests" / "alerts_test.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
# Series Prometheus makes itself for every target; no server exports them.
PROMETHEUS_MADE = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: run `bin/ensure-tools promtool` (make test does)"
    return subprocess.run([binary, *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=120)


def _rules() -> list[dict]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def _dashboard_exprs() -> dict[str, list[str]]:
    exprs = {}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        exprs[path.name] = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    return exprs


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (not functions, labels or keywords)."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", expr)
    return {name for name in names if name not in _PROMQL_WORDS}


def test_metric_name_extraction_reads_series_only():
    expr = 'histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{le="0.3",x=~"b.*"}[5m]))) / on(x) rec:b:c offset 1h or vector(0)'
    assert metric_names(expr) == {"a_bucket", "rec:b:c"}


def test_rule_files_pass_promtool_check():
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_pass():
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_catch_a_broken_threshold(tmp_path):
    """The unit tests can fail: move the pool threshold and they do."""
    shutil.copytree(PROMETHEUS, tmp_path / "prometheus")
    alerts = tmp_path / "prometheus" / "rules" / "alerts.yml"
    alerts.write_text(
        alerts.read_text().replace("alias:db_pool_use:ratio > 0.7", "alias:db_pool_use:ratio > 0.9")
    )
    result = promtool("test", "rules", "tests/alerts_test.yml", cwd=tmp_path / "prometheus")
    assert result.returncode != 0
    assert "DbPoolUseHigh" in result.stdout + result.stderr


def test_push_alert_unit_tests_catch_a_broken_threshold(tmp_path):
    """Loosen the push queue age alert and its unit test fails."""
    shutil.copytree(PROMETHEUS, tmp_path / "prometheus")
    alerts = tmp_path / "prometheus" / "rules" / "alerts.yml"
    text = alerts.read_text()
    assert "max(push_queue_oldest_due_seconds) > 60" in text
    alerts.write_text(
        text.replace("max(push_queue_oldest_due_seconds) > 60", "max(push_queue_oldest_due_seconds) > 600")
    )
    result = promtool("test", "rules", "tests/alerts_test.yml", cwd=tmp_path / "prometheus")
    assert result.returncode != 0
    assert "PushQueueStuck" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fires == set(), "alerts without a firing case"
    assert alerts - quiet == set(), "alerts without a non-firing case"
    assert {
        "ApiAvailabilityBudgetBurnFast",
        "ApiAvailabilityBudgetBurnSlow",
        "ApiLatencyBudgetBurnFast",
        "ApiLatencyBudgetBurnSlow",
        "ApiErrorRateHigh",
        "ReplicaLagWarning",
        "ReplicaLagCritical",
        "DbPoolUseHigh",
        "EdgeCacheHitRateLow",
        "PushDeadLetters",
        "PushQueueStuck",
        "PushQueueDeep",
        "PushWorkerDown",
    } <= alerts


def test_burn_rate_alerts_use_the_workbook_windows_and_factors():
    by_name = {rule["alert"]: rule["expr"] for rule in _rules() if "alert" in rule}
    for sli, budget in (("api_errors", "0.0005"), ("api_latency_slow", "0.05")):
        kind = "Availability" if sli == "api_errors" else "Latency"
        page, ticket = by_name[f"Api{kind}BudgetBurnFast"], by_name[f"Api{kind}BudgetBurnSlow"]
        for long, short, factor, expr in (
            ("1h", "5m", "14.4", page),
            ("6h", "30m", "6", page),
            ("1d", "2h", "3", ticket),
        ):
            assert f"slo:{sli}:ratio_rate{long} > ({factor} * {budget})" in expr
            assert f"slo:{sli}:ratio_rate{short} > ({factor} * {budget})" in expr
        assert (
            f"slo:{sli}:ratio_rate3d > {budget}" in ticket and f"slo:{sli}:ratio_rate6h > {budget}" in ticket
        )


def test_scrape_config_is_valid(tmp_path):
    shutil.copytree(PROMETHEUS, tmp_path / "prometheus")
    (tmp_path / "prometheus" / "metrics-token").write_text("token-for-the-check\n")
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    api, push_worker = config["scrape_configs"]
    assert api["metrics_path"] == "/v1/system/metrics/prometheus"
    assert api["authorization"]["type"] == "Bearer"
    # the push worker answers its own scrape on loopback (docs/push.md)
    assert push_worker["metrics_path"] == "/metrics"
    assert push_worker["static_configs"][0]["targets"] == ["127.0.0.1:8002"]


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses each dashboard query as a recording rule's expression."""
    rules = [
        {"record": f"dashboard:query:{n}", "expr": expr}
        for n, expr in enumerate(e for exprs in _dashboard_exprs().values() for e in exprs)
    ]
    assert len(rules) >= 15
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_show_what_operators_need():
    titles = " | ".join(
        panel["title"].lower() for path in DASHBOARDS for panel in json.loads(path.read_text())["panels"]
    )
    for words in (
        "p50 / p95 / p99",
        "error rate",
        "realtime delivery",
        "cache hit rate",
        "replica lag",
        "pool use",
    ):
        assert words in titles
    provisioning = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "hospitality.yml").read_text()
    )
    assert provisioning["providers"][0]["type"] == "file"
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] and all(panel["datasource"]["uid"] == "prometheus" for panel in board["panels"])


@pytest.mark.live
def test_every_metric_in_rules_and_dashboards_is_in_a_live_scrape(
    django_db_setup, django_db_blocker, tmp_path
):
    """Both jobs of prometheus.yml: the API servers and the push worker (its own scrape)."""
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    named = set().union(*(metric_names(rule["expr"]) for rule in rules))
    named |= set().union(*(metric_names(e) for exprs in _dashboard_exprs().values() for e in exprs))
    needed = named - recorded - PROMETHEUS_MADE
    assert {"api_requests_total", "db_replica_lag_seconds", "db_pool_connections"} <= needed

    with (
        django_db_blocker.unblock(),
        running_server(
            database_url_for_servers(),
            WEB_CONCURRENCY="2",
            METRICS_TOKEN=METRICS_TOKEN,
            REPLICA_URLS=replica_urls(),  # the stack's real standbys, each with its lag series
        ) as url,
    ):
        httpx.get(url + "/v1/orgs", timeout=10)  # any request: 4xx is traffic too
        samples = scrape_samples(url)
        worker_port = free_port()
        with push_worker(
            database_url_for_servers(), tmp_path / "push-metrics", PUSH_WORKER_METRICS_PORT=str(worker_port)
        ):
            worker_text = wait_until(lambda: _scraped(f"http://127.0.0.1:{worker_port}/metrics"), 30)
    worker_samples = [s for family in text_string_to_metric_families(worker_text) for s in family.samples]
    exported = {sample.name for sample in samples + worker_samples}
    assert needed - exported == set(), "named in rules or dashboards but not exported"
    replicas = {s.labels["alias"] for s in samples if s.name == "db_replica_lag_seconds"}
    assert len(replicas) >= 2, "the stack's replicas should each have a lag series"


def _scraped(url: str) -> str:
    try:
        response = httpx.get(url, timeout=2)
    except httpx.TransportError:
        return ""
    return response.text if response.status_code == 200 and "push_sends_total" in response.text else ""
