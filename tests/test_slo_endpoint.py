"""GET /v1/system/metrics/aggregated against real gunicorn workers: the SLOs follow
what the server really did. Slowness and failures are caused for real: the test holds
an exclusive lock on the token table, so every authenticated request waits on
Postgres (and fails once the server's statement timeout is shorter than the wait)."""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import psycopg
import pytest

from tests.conftest import test_database_url as database_url_for_servers
from tests.live_server import running_server
from tests.metrics_scrape import METRICS_TOKEN, aggregated

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

OPERATOR_PROBE = "/v1/system/health"  # readiness probe outside the SLIs


@contextmanager
def token_table_locked_for(seconds: float) -> Iterator[None]:
    """Hold ACCESS EXCLUSIVE on knox_authtoken for `seconds` (from a thread)."""
    locked = threading.Event()

    def hold() -> None:
        with psycopg.connect(database_url_for_servers()) as conn:
            conn.execute("LOCK TABLE knox_authtoken IN ACCESS EXCLUSIVE MODE")
            locked.set()
            time.sleep(seconds)

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    try:
        yield
    finally:
        holder.join()


def _get_many(url: str, token: str, count: int, at_once: int = 8) -> list[tuple[int, float]]:
    def one(_: int) -> tuple[int, float]:
        started = time.perf_counter()
        status = httpx.get(
            url + "/v1/orgs", headers={"Authorization": f"Token {token}"}, timeout=30
        ).status_code
        return status, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=at_once) as pool:
        return list(pool.map(one, range(count)))


def _slo(report: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in report["slo"]}


@pytest.fixture
def user_token(make_user) -> str:
    from tests.tokens import token_for

    return token_for(make_user())


def test_aggregated_reports_a_latency_breach(user_token):
    env = {"WEB_CONCURRENCY": "2", "METRICS_TOKEN": METRICS_TOKEN}
    with running_server(database_url_for_servers(), ready_path=OPERATOR_PROBE, **env) as url:
        started = time.time()
        assert aggregated(url)["api"]["requests"] == 0  # the readiness probe is operator traffic
        # 200 requests, 2 at a time: a few slow ones on a busy shared machine (up to 10)
        # cannot break the SLO on their own.
        assert {status for status, _ in _get_many(url, user_token, 200, at_once=2)} == {200}
        report = aggregated(url)
        slo = _slo(report)
        assert report["api"]["requests"] == 200, report
        assert report["api"]["errors_5xx"] == 0
        assert 0 < report["window"]["seconds"] <= time.time() - started + 5
        assert slo["api_latency_p95"]["compliant"] is True and slo["api_latency_p95"]["current"] <= 0.3
        assert slo["error_rate"] == slo["error_rate"] | {"current": 0.0, "compliant": True, "target": 0.001}
        assert slo["availability"] == slo["availability"] | {"current": 1.0, "compliant": True}
        # Not measurable yet: said so, not invented.
        for name in ("realtime_delivery_p95", "cache_hit_rate"):
            assert (slo[name]["current"], slo[name]["compliant"]) == (None, None)
        assert report["realtime"]["delivery_p95_seconds"] is None and report["cache"]["hit_rate"] is None
        assert report["pool"]["default"]["max"] > 0

        # 4 x 4 requests wait on the lock (held 1.5 s, far longer than any client-side
        # delay on a busy machine): 16 of 216 over 300 ms (> 5 %) breaks "p95 < 300 ms".
        # At most 4 at once: gunicorn may hand all of them to one worker's 4 threads,
        # and time queued for a thread is invisible to Django (docs/observability.md).
        for _ in range(4):
            with token_table_locked_for(1.5):
                slow = _get_many(url, user_token, 4, at_once=4)
            assert all(status == 200 and took >= 0.9 for status, took in slow), slow
        report = aggregated(url)
    slo = _slo(report)
    assert report["api"]["requests"] == 216
    assert slo["api_latency_p95"]["compliant"] is False and slo["api_latency_p95"]["current"] > 0.3
    assert report["api"]["latency_seconds"]["p99"] > 0.3
    assert slo["error_rate"]["compliant"] is True


def test_aggregated_reports_an_error_breach_and_the_window_slides_it_out(user_token):
    env = {
        "WEB_CONCURRENCY": "2",
        "METRICS_TOKEN": METRICS_TOKEN,
        "DB_STATEMENT_TIMEOUT_MS": "300",
        "SLO_WINDOW_SECONDS": "4",
        "METRICS_SAMPLE_INTERVAL_SECONDS": "0.25",
    }
    with running_server(database_url_for_servers(), ready_path=OPERATOR_PROBE, **env) as url:
        assert {status for status, _ in _get_many(url, user_token, 40, at_once=2)} == {200}
        assert _slo(aggregated(url))["error_rate"]["compliant"] is True
        # 4 requests wait on the lock longer than the 300 ms statement timeout: real 500s.
        with token_table_locked_for(2.0):
            assert {status for status, _ in _get_many(url, user_token, 4, at_once=4)} == {500}
        report = aggregated(url)
        slo = _slo(report)
        assert report["api"]["errors_5xx"] == 4
        assert slo["error_rate"]["current"] == pytest.approx(4 / report["api"]["requests"])
        assert slo["error_rate"]["compliant"] is False
        assert slo["availability"]["current"] == pytest.approx(1 - 4 / report["api"]["requests"])
        assert slo["availability"]["compliant"] is False

        deadline = time.monotonic() + 5.5
        while time.monotonic() < deadline:  # good traffic while the failures age out
            assert {status for status, _ in _get_many(url, user_token, 2)} == {200}
            time.sleep(0.25)
        report = aggregated(url)
    slo = _slo(report)
    assert report["window"]["seconds"] == pytest.approx(4, abs=0.8)
    assert report["api"]["errors_5xx"] == 0 and report["api"]["requests"] > 0
    assert slo["error_rate"]["compliant"] is True and slo["availability"]["compliant"] is True
