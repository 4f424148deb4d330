"""Every Redis key pattern and atomic use (Lua script, multi-key command) keeps its keys
in one cluster slot, from the code's own registry (core/redis_keys.py), and nothing that
needs registering escapes it. With REDIS_CLUSTER_NODES set, the slots are also checked
against the cluster itself (CLUSTER KEYSLOT, and a real CROSSSLOT refusal)."""

import ast
import importlib
import re
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from redis.exceptions import RedisClusterException

from core import redis_keys
from core.redis_clients import cluster_mode, key_slot, pipeline_eval, sync_redis
from core.redis_keys import (
    ATOMIC_USES,
    KEY_PATTERNS,
    AtomicUse,
    KeySample,
    cross_slot_uses,
    untagged_patterns,
)

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".venv", "tests", "bench", "loadtest", "node_modules", ".stack", "client", "syncclient"}
# Commands that take several keys (Redis Cluster refuses them across slots).
MULTI_KEY_CALL = re.compile(
    r"\.(mget|mset|msetnx|sunion|sunionstore|sinter|sinterstore|sdiff|sdiffstore|zunionstore|zinterstore|"
    r"zdiff|zdiffstore|zinter|zunion|rename|renamenx|smove|lmove|blmove|rpoplpush|brpoplpush|copy|bitop|"
    r"pfmerge|xread|xreadgroup|sintercard|lmpop|zmpop|blpop|brpop|bzpopmin|bzpopmax)\("
)


def _load_registry() -> None:
    for module in redis_keys.registered_modules():
        importlib.import_module(module)


def _samples(count: int = 64) -> list[KeySample]:
    return [KeySample() for _ in range(count)]


def _project_modules() -> list[Path]:
    return [
        path
        for path in ROOT.rglob("*.py")
        if not SKIP_DIRS.intersection(path.relative_to(ROOT).parts[:1]) and "migrations" not in path.parts
    ]


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def unregistered_scripts(paths: list[Path], registered: set[str]) -> list[str]:
    """Lua scripts (string constants calling redis.call) not in the registry."""
    missing = []
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "redis.call(" in node.value:
                text = node.value
                if not any(text in script or script in text for script in registered):
                    missing.append(f"{path.name}: {text.strip()[:60]}")
    return missing


def unregistered_multi_key_calls(paths: list[Path]) -> list[str]:
    """Multi-key commands in modules that talk to Redis, unless registered."""
    found = []
    for path in paths:
        if "redis" not in path.read_text():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if MULTI_KEY_CALL.search(line) and "atomic_command" not in line:
                found.append(f"{path.name}:{number}: {line.strip()}")
    return found


def test_every_atomic_use_keeps_its_keys_in_one_slot() -> None:
    _load_registry()
    names = set(ATOMIC_USES)
    # The registry holds every script the project runs (a smoke check that it is filled).
    assert {"realtime.publish_in_order", "realtime.lease_take", "idempotency.release"} <= names
    assert cross_slot_uses(list(ATOMIC_USES.values()), _samples()) == {}


def test_every_key_pattern_names_its_hash_tag() -> None:
    _load_registry()
    assert len(KEY_PATTERNS) >= 12
    assert untagged_patterns(list(KEY_PATTERNS.values()), _samples(1)) == []
    for pattern in KEY_PATTERNS.values():
        assert pattern.hash_tag, pattern.name


def test_keys_tagged_by_an_id_spread_over_slots() -> None:
    """A tag that is by org (user, client...) gives different orgs different slots:
    the cluster spreads them instead of piling every org onto one node."""
    _load_registry()
    samples = _samples()
    for pattern in KEY_PATTERNS.values():
        if pattern.hash_tag.startswith("global"):
            assert len({key_slot(pattern.sample(s)) for s in samples}) == 1, pattern.name
        else:
            assert len({key_slot(pattern.sample(s)) for s in samples}) > 32, pattern.name


def test_every_script_and_multi_key_command_in_the_code_is_registered() -> None:
    _load_registry()
    paths = _project_modules()
    scripts = {use.script for use in ATOMIC_USES.values() if use.script}
    assert unregistered_scripts(paths, scripts) == []
    assert unregistered_multi_key_calls(paths) == []
    owners = {_module_name(p) for p in paths if "redis.call(" in p.read_text()}
    assert owners <= set(redis_keys.registered_modules())


# --- mutation checks: the checks above do fail on a cross-slot design --------------------
def test_a_cross_slot_script_fails_the_check() -> None:
    """The publish script as it was (the org's stream with the global stats hash)."""
    from realtime import keys

    old_publish = AtomicUse(
        name="publish_with_global_stats",
        keys=lambda s: [keys.org_stream_key(s.org_id), keys.org_channel(s.org_id), keys.STATS_KEY],
        script="redis.call('HINCRBY', KEYS[3], 'events_published', 1)",
    )
    assert set(cross_slot_uses([old_publish], _samples())) == {"publish_with_global_stats"}


def test_a_registered_script_whose_key_loses_its_tag_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    _load_registry()
    from realtime import keys

    monkeypatch.setattr(keys, "org_version_key", lambda org_id: f"rt:version:{org_id}")
    assert "realtime.publish_in_order" in cross_slot_uses(list(ATOMIC_USES.values()), _samples())


def test_an_unregistered_script_or_multi_key_command_fails_the_check(tmp_path: Path) -> None:
    module = tmp_path / "feature.py"
    module.write_text(
        "SCRIPT = \"return redis.call('GET', KEYS[1])\"\n"
        "def read(client, a, b):\n"
        "    return client.mget([a, b])\n"
    )
    assert unregistered_scripts([module], set()) != []
    assert unregistered_multi_key_calls([module]) != []


@pytest.mark.skipif(not cluster_mode(), reason="needs REDIS_CLUSTER_NODES (the cluster pass of make test)")
def test_the_cluster_agrees_on_slots_and_refuses_cross_slot_scripts() -> None:
    _load_registry()
    # In cluster mode the client is a RedisCluster (behind its lazy proxy: no isinstance).
    client = cast(redis.RedisCluster, sync_redis())
    for pattern in KEY_PATTERNS.values():
        key = pattern.sample(KeySample())
        assert client.cluster_keyslot(key) == key_slot(key), pattern.name
    sample = KeySample()
    stream = f"rt:events:{{{sample.org_id}}}"
    assert (
        client.eval(
            "return redis.call('EXISTS', KEYS[1], KEYS[2])", 2, stream, f"rt:version:{{{sample.org_id}}}"
        )
        == 0
    )
    cross_slot = ("return redis.call('EXISTS', KEYS[1], KEYS[2])", 2, stream, "{rt-stats}:counters")
    with pytest.raises(RedisClusterException, match="same key slot"):  # the client refuses it
        client.eval(*cross_slot)
    node = client.get_node_from_key(stream)
    with pytest.raises(redis.ResponseError, match="same slot"):  # and so does the server (CROSSSLOT)
        redis.Redis(host=node.host, port=node.port, socket_timeout=2).eval(*cross_slot)


@pytest.mark.skipif(not cluster_mode(), reason="needs REDIS_CLUSTER_NODES (the cluster pass of make test)")
def test_a_script_in_a_cluster_pipeline_goes_straight_to_its_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py asks a node for an EVAL's keys (COMMAND GETKEYS: a round trip of its own)
    unless the command names its node; a stale node still gets there through MOVED."""
    import redis.connection

    sent: list[bytes] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def spy(self: redis.connection.AbstractConnection, command: Any, check_health: bool = True) -> None:
        parts = command if isinstance(command, list) else [command]
        sent.append(b"".join(bytes(part) for part in parts))
        return send(self, command, check_health)

    client = cast(redis.RedisCluster, sync_redis())  # a LazyRedisCluster: a RedisCluster once used
    key, script = f"test:{{{uuid.uuid4()}}}", "return redis.call('INCR', KEYS[1])"
    client.ping()  # connections and the slot map first
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", spy)
    pipe = client.pipeline(transaction=False)
    pipeline_eval(pipe, script, [key], [])
    assert pipe.execute() == [1]
    assert not any(b"GETKEYS" in batch for batch in sent), sent
    assert sum(b"\r\nEVAL\r\n" in batch for batch in sent) == 1
    owner = client.get_node_from_key(key)
    elsewhere = next(node for node in client.get_primaries() if node.name != owner.name)
    pipe = client.pipeline(transaction=False)
    monkeypatch.setattr(pipe, "get_node_from_key", lambda key, replica=False: elsewhere)  # a stale slot map
    pipeline_eval(pipe, script, [key], [])
    assert pipe.execute() == [2]
    client.delete(key)
