"""A TypeScript client generated from /v1/schema works (CONTRACT §7): openapi-typescript
(pinned in client/package-lock.json, installed by `make test`) generates the types from
the live server's schema, tsc type-checks client/src/smoke.ts against them, and node
runs it against the same server: log in, create an org, a property and an expense,
list and summarise."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

CLIENT = Path(__file__).resolve().parent.parent / "client"
BIN = CLIENT / "node_modules" / ".bin"


def run(*command: str, **env: str) -> str:
    result = subprocess.run(
        command, cwd=CLIENT, env=os.environ | env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def test_a_generated_typescript_client_type_checks_and_runs_a_session(live_wsgi, make_user, settings):
    assert (BIN / "tsc").exists(), "client/node_modules is missing: `make test` installs it (npm ci)"
    assert shutil.which("node"), "node is missing"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # the server's
    user = make_user(password="ts-client-pw-123!")
    shutil.rmtree(CLIENT / "generated", ignore_errors=True)
    shutil.rmtree(CLIENT / "dist", ignore_errors=True)
    run(str(BIN / "openapi-typescript"), f"{live_wsgi}/v1/schema", "-o", "generated/api.d.ts")
    run(str(BIN / "tsc"), "-p", ".")
    output = run(
        "node",
        "dist/src/smoke.js",
        API_BASE_URL=live_wsgi,
        API_USERNAME=user.username,
        API_PASSWORD="ts-client-pw-123!",
    )
    assert '"currency":"EUR"' in output, output
