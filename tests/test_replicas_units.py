"""Pure logic of the replica router: LSN text, position headers, check scheduling."""

import pytest

from replicas.conf import replica_settings
from replicas.lsn import int_to_lsn, lsn_to_int
from replicas.middleware import format_position, parse_positions
from replicas.topology import Cluster


@pytest.mark.parametrize(
    ("text", "value"), [("0/0", 0), ("0/3000148", 0x3000148), ("16/B374D848", 0x16B374D848)]
)
def test_lsn_round_trip(text, value):
    assert lsn_to_int(text) == value
    assert int_to_lsn(value) == text


@pytest.mark.parametrize("text", ["", "0", "/1", "1/", "+1/1", "1_0/1", "123456789/0", "0/-1", " 0 /1"])
def test_lsn_rejects_junk(text):
    with pytest.raises(ValueError):
        lsn_to_int(text)


def test_position_headers_name_the_cluster_except_the_home_one():
    assert format_position(Cluster("main", "default", ()), 0x10) == "0/10"
    assert format_position(Cluster("orgb", "b", ()), 0x10) == "orgb:0/10"
    assert parse_positions("0/10, orgb:0/20, junk, orgb:0/5") == {"main": 0x10, "orgb": 0x20}


def test_the_checker_runs_at_least_four_times_per_critical_window(settings):
    settings.REPLICA_HEALTH_CHECK_INTERVAL = 30000
    settings.REPLICA_LAG_CRITICAL_SECONDS = 10
    assert replica_settings().check_period_seconds == 2.5
    settings.REPLICA_HEALTH_CHECK_INTERVAL = 500
    assert replica_settings().check_period_seconds == 0.5
    # positions outlive the critical lag, whatever the setting says
    settings.REPLICA_POSITION_TTL_SECONDS = 1
    assert replica_settings().position_ttl_seconds == 11


@pytest.mark.parametrize(
    ("sql", "reads_only"),
    [
        ("SELECT 1", True),
        ("  show server_version", True),
        ("WITH page AS (SELECT id FROM finance_expense) SELECT * FROM page", True),
        # a finance create: one WITH statement that writes (never run twice outside a transaction)
        ("WITH taken AS (UPDATE org_changes SET version = version + 1 RETURNING version) SELECT 1", False),
        ("WITH entry AS (INSERT INTO finance_expense VALUES (1) RETURNING id) SELECT id FROM entry", False),
        ("with gone as (delete from finance_expense returning id) select 1", False),
        ("INSERT INTO t VALUES (1)", False),
        ("UPDATE t SET a = 1", False),
    ],
)
def test_only_statements_that_write_nothing_may_run_twice_outside_a_transaction(sql, reads_only):
    from replicas.primary.base import statement_reads_only

    assert statement_reads_only(sql) is reads_only
