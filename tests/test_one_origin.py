"""One public origin (CONTRACT §7): the URL bin/serve prints (what `make run` ends
with) is the edge, and it serves REST, admin and websockets; gunicorn and uvicorn
listen on internal ports behind it. Real bin/serve, real Varnish with the shipped VCL."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests import conftest
from tests.live_server import free_port
from tests.realtime_client import next_event, open_socket, token_of
from tests.replica_support import wait_until
from tests.varnish_server import running_varnish

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent


def test_the_printed_origin_serves_rest_admin_and_a_websocket_that_receives_events(tenant, django_db_blocker):
    edge_port, rest_port, realtime_port = free_port(), free_port(), free_port()
    token = token_of(tenant.users["owner"])
    env = os.environ | conftest.REALTIME_TEST_ENV | {
        "DATABASE_URL": conftest.test_database_url(), "REPLICA_URLS": "", "PORT": str(edge_port),
        "REST_PORT": str(rest_port), "REALTIME_PORT": str(realtime_port), "WEB_CONCURRENCY": "1",
        "REALTIME_WORKERS": "1", "ACCESS_LOG": "", "PYTHON": sys.executable,
        "CDN_VARNISH_URLS": f"http://127.0.0.1:{edge_port}",
    }  # fmt: skip
    printed: list[str] = []
    # As `make serve` does before bin/serve: the admin's pages need the static manifest.
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    with (
        django_db_blocker.unblock(),
        running_varnish(rest_port=rest_port, realtime_port=realtime_port, port=edge_port),
    ):
        serve = subprocess.Popen(
            [str(ROOT / "bin" / "serve")], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        output = serve.stdout
        assert output is not None
        reader = threading.Thread(target=lambda: printed.extend(output), daemon=True)
        reader.start()
        try:
            wait_until(lambda: any("serving on" in line for line in printed), 30)
            serving = re.search(r"serving on (http://\S+)", "".join(printed))
            assert serving is not None
            origin = serving.group(1)
            assert origin == f"http://127.0.0.1:{edge_port}"
            wait_until(lambda: _answers(origin + "/v1/system/health"), 60)
            wait_until(lambda: _answers(f"http://127.0.0.1:{realtime_port}/v1/system/health"), 60)

            headers = {"Authorization": f"Token {token}"}
            listed = httpx.get(origin + tenant.url("/expenses"), headers=headers, timeout=30)
            assert listed.status_code == 200 and "results" in listed.json()
            admin = httpx.get(origin + "/admin/login/", timeout=30)
            assert admin.status_code == 200 and b"csrfmiddlewaretoken" in admin.content

            async def websocket_scenario() -> dict:
                ws_origin = "ws" + origin.removeprefix("http")
                # as a page served by this origin opens it: a browser sends its Origin
                socket, _ = await open_socket(ws_origin, tenant.org.id, token, origin=origin)
                try:
                    created = await asyncio.to_thread(
                        httpx.post,
                        origin + tenant.url("/expenses"),
                        json=tenant.entry_payload(),
                        headers=headers,
                        timeout=30,
                    )
                    assert created.status_code == 201, created.text
                    event = await next_event(socket, timeout=15)
                    assert event["data"]["id"] == created.json()["id"], event
                    return event
                finally:
                    await socket.close()

            event = asyncio.run(websocket_scenario())
            assert event["type"] == "expense.created"
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code in (200, 503)
    except httpx.TransportError:
        return False
