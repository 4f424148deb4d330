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
