"""A second real database cluster for tests: its own Postgres primary and streaming
replica (`bin/stack cluster-up 2`, separate servers from the main cluster's), with a
test database of its own, migrated, and known to this process as cluster "c2"
(aliases `tc2_primary`, `tc2_replica1`). Server processes get it through the same
settings production uses (CLUSTER_COUNT, CLUSTER2_DATABASE_URL, CLUSTER2_REPLICA_URLS).

Import the `second_cluster` fixture into a test module; it is module-scoped so the
aliases exist before pytest-django resolves `databases="__all__"`.
"""

import copy
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
import pytest
from django.core.management import call_command
from django.db import connections

from replicas.pools import connection_pools
from tests.pinned_env import stack_environ
from tests.replica_support import ROOT, STACK, wait_until

NAME = "c2"
PRIMARY = "tc2_primary"
REPLICA = "tc2_replica1"


@dataclass(frozen=True)
class SecondCluster:
    database: str
    primary_url: str
    replica_url: str

    def server_env(self) -> dict[str, str]:
        """What a server process needs to reach this cluster as "c2"."""
        return {
            "CLUSTER_COUNT": "2",
            "CLUSTER2_DATABASE_URL": self.primary_url,
            "CLUSTER2_REPLICA_URLS": self.replica_url,
        }

    def sql(self, query: str, params: tuple = (), *, replica: bool = False) -> list[tuple]:
        with psycopg.connect(self.replica_url if replica else self.primary_url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []


def _stack_env() -> dict[str, str]:
    started = subprocess.run(
        [str(STACK), "cluster-up", "2"], check=False, capture_output=True, timeout=180, cwd=ROOT, text=True,
        env=stack_environ(),  # not the suite's pinned CLUSTER_COUNT: bin/stack saves it
    )  # fmt: skip
    assert started.returncode == 0, (
        f"bin/stack cluster-up 2 failed: {started.stdout[-1000:]} {started.stderr[-1000:]}"
    )
    out = subprocess.run(
        [str(STACK), "env"], check=True, capture_output=True, timeout=60, cwd=ROOT, text=True,
        env={**stack_environ(), "CLUSTER_COUNT": "2"},
    ).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("CLUSTER2_"))


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{database}").geturl()


def _alias_params(like: str, url: str) -> dict:
    parts = urlsplit(url)
    params = copy.deepcopy(connections.settings[like])
    params.update({"HOST": parts.hostname, "PORT": parts.port, "NAME": parts.path.lstrip("/")})
    return params


def _replica_has(url: str, database: str) -> bool:
    try:
        with psycopg.connect(_with_database(url, "postgres"), autocommit=True, connect_timeout=3) as conn:
            return (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
                is not None
            )
    except psycopg.Error:
        return False


@pytest.fixture(scope="module")
def second_cluster(django_db_setup, django_db_blocker) -> Iterator[SecondCluster]:
    from django.test import override_settings

    from directory.cache import directory_cache
    from replicas.checker import checker

    found = _stack_env()
    database = connections["default"].settings_dict["NAME"] + "_c2"
    primary_url = _with_database(found["CLUSTER2_DATABASE_URL"], database)
    replica_url = _with_database(found["CLUSTER2_REPLICA_URLS"].split(",")[0], database)
    cluster = SecondCluster(database=database, primary_url=primary_url, replica_url=replica_url)
    admin_url = _with_database(primary_url, "postgres")
    with django_db_blocker.unblock():
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{database}"')
        connections.settings[PRIMARY] = _alias_params("default", primary_url)
        connections.settings[REPLICA] = _alias_params("replica1", replica_url) | {"TEST": {"MIRROR": PRIMARY}}
        clusters = {
            "main": {"primary": "default", "replicas": ["replica1", "replica2"]},
            NAME: {"primary": PRIMARY, "replicas": [REPLICA]},
        }
        with override_settings(DATABASE_CLUSTERS=clusters):
            call_command("migrate", database=PRIMARY, verbosity=0)
            wait_until(lambda: _replica_has(replica_url, database), 30)
            directory_cache.clear()
            try:
                yield cluster
            finally:
                checker.stop()  # it holds connections to the second cluster
                directory_cache.clear()
                for alias in (PRIMARY, REPLICA):
                    connections[alias].close()
                    pool = connection_pools().pop(alias, None)
                    if pool is not None:
                        pool.close()
                    del connections.settings[alias]
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def fetch_all(alias: str, query: str, params: tuple = ()) -> list[tuple]:
    """Every row a query answers on one database alias (none for a statement)."""
    with connections[alias].cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def cluster_of(org_id: uuid.UUID) -> str:
    """The cluster the directory places the org on (it must know the org)."""
    from directory.selectors import placement_get

    placement = placement_get(org_id=org_id)
    assert placement is not None, f"the directory does not know org {org_id}"
    return placement.cluster
