"""The OpenAPI schema against the live API (CONTRACT §7): schemathesis, pinned in
requirements-dev.txt, runs every check it has over every route in /v1/schema,
including the stateful phase along the schema's links, against a real gunicorn: routes
added later are checked without editing this test. A deterministic seed keeps the run
reproducible. Credentials come from tests/schemathesis_hooks.py."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import conftest
from tests.live_server import running_server
from tests.realtime_client import token_of

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
THROWAWAY_USERS = 40  # one per call of a token-revoking route


def test_every_route_answers_as_its_schema_says(tenant):
    from django.contrib.auth import get_user_model

    throwaway = [
        token_of(get_user_model().objects.create_user(username=f"schemathesis-throwaway-{n}"))
        for n in range(THROWAWAY_USERS)
    ]
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "SCHEMATHESIS_TOKEN": token_of(tenant.users["owner"]),
        "SCHEMATHESIS_STAFF_TOKEN": token_of(
            get_user_model().objects.create_user(username="schemathesis-staff", is_staff=True)
        ),
        "SCHEMATHESIS_THROWAWAY_TOKENS": ",".join(throwaway),
        "PYTHONPATH": str(ROOT),
    }
    # Thousands of requests in a minute: with the default per-token limit most would be
    # 429 (documented, and tested in tests/test_http_limits.py), leaving little checked.
    with running_server(conftest.test_database_url(), API_RATE_LIMIT_PER_MINUTE="1000000") as url:
        result = subprocess.run(
            [
                str(SCHEMATHESIS), "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
                "run", f"{url}/v1/schema", "--checks", "all",
                "--max-examples", "5", "--workers", "1", "--seed", "1", "--generation-deterministic",
                "--request-timeout", "60", "--no-color", "--suppress-health-check", "all",
            ],
            capture_output=True, text=True, timeout=1800, check=False, env=env, cwd=ROOT,
        )  # fmt: skip
    print(result.stdout)
    summary = result.stdout[-8000:]
    assert result.returncode == 0, summary + result.stderr[-2000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in result.stdout, summary  # each phase ran, and passed
    assert "Authentication failed" not in result.stdout, summary  # the routes ran past their 401
    links = re.search(r"API Links:\s+(\d+) covered", result.stdout)
    assert links and int(links.group(1)) > 0, summary  # the stateful phase followed links
