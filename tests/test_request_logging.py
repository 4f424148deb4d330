"""Structured logs: a request id on every line of a request and in X-Request-ID, JSON
by default, and per-decision routing logs only when LOG_PARTITION_ROUTING is on."""

import io
import json
import logging
import os
import subprocess
import sys
import uuid

import httpx
import pytest

from monitoring.log_format import JsonFormatter, RequestIdFilter
from monitoring.request_context import current_request_id
from monitoring.routing_log import log_routing_decision
from tests.conftest import test_database_url as database_url_for_servers
from tests.live_server import ROOT, free_port, wait_until_up

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_log_lines():
    """Capture the root logger through the project's own filter and JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)


def test_a_request_id_is_made_and_returned(client_for):
    first = client_for(None).get("/v1/system/health")
    second = client_for(None).get("/v1/system/health")
    assert len(first["X-Request-ID"]) == 32 and first["X-Request-ID"] != second["X-Request-ID"]


def test_a_sane_incoming_request_id_is_kept(client_for):
    response = client_for(None).get("/v1/system/health", HTTP_X_REQUEST_ID="edge-7f3a:42.req_1")
    assert response["X-Request-ID"] == "edge-7f3a:42.req_1"


@pytest.mark.parametrize(
    "incoming", ["short", "x" * 129, "has space inside", 'quote"inside-1234', "<script>alert(1)</script>", ""]
)
def test_an_unsafe_incoming_request_id_is_replaced(client_for, incoming):
    response = client_for(None).get("/v1/system/health", HTTP_X_REQUEST_ID=incoming)
    assert response["X-Request-ID"] != incoming and len(response["X-Request-ID"]) == 32


def test_every_log_line_of_a_request_carries_its_id(client_for, settings, json_log_lines):
    # Redis unreachable: the health check logs a warning from inside the request, and
    # Django logs the 404 after the middleware has returned: both carry the id.
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.REDIS_CLUSTER_NODES = []  # this one node, not the cluster
    client = client_for(None)
    health = client.get("/v1/system/health", HTTP_X_REQUEST_ID="req-health-0001")
    missing = client.get(f"/v1/orgs/{uuid.uuid4()}/nothing-here", HTTP_X_REQUEST_ID="req-missing-0002")
    assert health.status_code == 200 and missing.status_code == 404
    lines = json_log_lines()
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["req-health-0001"]["logger"] == "monitoring.health"
    assert by_id["req-health-0001"]["level"] == "WARNING"
    assert by_id["req-missing-0002"]["logger"] == "django.request"
    assert all({"ts", "level", "logger", "message", "request_id"} <= line.keys() for line in lines)


def test_a_line_outside_any_request_has_a_null_id(json_log_lines):
    logging.getLogger("test").warning("background job")
    (line,) = [line for line in json_log_lines() if line["logger"] == "test"]
    assert line["request_id"] is None and line["message"] == "background job"


def test_routing_decisions_are_logged_only_when_enabled(settings, json_log_lines):
    token = current_request_id.set("req-routing-0003")
    try:
        settings.LOG_PARTITION_ROUTING = False
        log_routing_decision(
            alias="replica1", reason="replica_ok", model="finance.Expense", org_id=uuid.UUID(int=7)
        )
        settings.LOG_PARTITION_ROUTING = True
        log_routing_decision(
            alias="default",
            reason="read_your_writes",
            model="finance.Expense",
            org_id=uuid.UUID(int=7),
            write=False,
        )
    finally:
        current_request_id.reset(token)
    routing = [line for line in json_log_lines() if line["logger"] == "routing"]
    assert routing == [
        {
            "ts": routing[0]["ts"],
            "level": "INFO",
            "logger": "routing",
            "message": "routing decision",
            "request_id": "req-routing-0003",
            "db_alias": "default",
            "reason": "read_your_writes",
            "model": "finance.Expense",
            "org_id": str(uuid.UUID(int=7)),
            "operation": "read",
        }
    ]


@pytest.mark.live
def test_server_logs_are_json_lines_with_the_returned_request_id(django_db_blocker, tmp_path):
    """A real gunicorn: its stderr (app and access log) is JSON, one object per line."""
    port = free_port()
    log_path = tmp_path / "server.log"
    with django_db_blocker.unblock():
        database_url = database_url_for_servers()
    env = os.environ | {"DATABASE_URL": database_url, "REST_PORT": str(port), "WEB_CONCURRENCY": "1"}
    env |= {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_CLUSTER_NODES": ""}  # logs a warning
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}", server)
            response = httpx.get(f"http://127.0.0.1:{port}/v1/system/health", timeout=10)
        finally:
            server.terminate()
            server.wait(timeout=15)
    request_id = response.headers["X-Request-ID"]
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert {line["logger"] for line in mine} >= {"monitoring.health", "access"}
    access = next(line for line in mine if line["logger"] == "access")
    assert access["path"] == "/v1/system/health" and access["status"] == 200
