"""The test suite's database layout does not depend on `.env`.

`.env` (written by `bin/stack up`, or by hand) names the development databases. The
suite runs on test databases of its own (pytest-django's `test_` copy on the main
cluster) and with one database cluster: with `CLUSTER_COUNT=2` in `.env`, every
`GET /v1/orgs` would fan out to the development cluster c2, which tests neither
create nor clean. Tests that need a second cluster bring one
(tests/cluster_support.second_cluster) and hand it to server processes explicitly
(`SecondCluster.server_env()`: `CLUSTER_COUNT=2` and its URLs).

`pin()` runs before Django reads the settings (tests/settings.py): it sets these
variables in the test process's environment, so `.env` cannot override them and every
server or worker process a test starts inherits them. `bin/stack` calls get the
environment as it was before the pin (`stack_environ()`): it saves `CLUSTER_COUNT` in
its state, and a test run must not change what `make run` starts next.
"""

import os

PINNED = {"CLUSTER_COUNT": "1", "DIRECTORY_CLUSTER": "main", "DEFAULT_CLUSTER": "main"}
_before: dict[str, str | None] = {}


def pin() -> None:
    for name, value in PINNED.items():
        _before.setdefault(name, os.environ.get(name))
        os.environ[name] = value


def stack_environ() -> dict[str, str]:
    """os.environ with the pinned variables as they were before the pin (for bin/stack)."""
    environ = dict(os.environ)
    for name, value in _before.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return environ
