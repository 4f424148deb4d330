"""The registry of every Redis key pattern and every atomic multi-key use (a Lua script
or a multi-key command), filled by the modules that own them.

Redis Cluster runs a script or a multi-key command only when all its keys hash to one
slot, so each pattern names its hash tag (the part in braces: the org, the user, the
client...) and each atomic use says which keys it touches together. The registry is
what tests/test_redis_keys.py checks (every atomic use in one slot, for many ids) and
what docs/redis.md tabulates; `cross_slot_uses` is that check.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from core.redis_clients import key_slot


@dataclass(frozen=True)
class KeySample:
    """Ids to build example keys from (random: a fixed tag must not pass by luck)."""

    org_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    other_user_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    token_digest: str = field(default_factory=lambda: uuid.uuid4().hex * 2)


@dataclass(frozen=True)
class KeyPattern:
    name: str
    pattern: str  # as documented, e.g. "rt:events:{<org id>}"
    hash_tag: str  # what the tag is chosen by: "org", "user", "client", "global: ..."
    sample: Callable[[KeySample], str]


@dataclass(frozen=True)
class AtomicUse:
    """A script or multi-key command: its keys must share one slot."""

    name: str
    keys: Callable[[KeySample], list[str]]
    script: str | None = None  # the Lua text, for scripts


KEY_PATTERNS: dict[str, KeyPattern] = {}
ATOMIC_USES: dict[str, AtomicUse] = {}


def key_pattern(name: str, *, pattern: str, hash_tag: str, sample: Callable[[KeySample], str]) -> None:
    KEY_PATTERNS[name] = KeyPattern(name=name, pattern=pattern, hash_tag=hash_tag, sample=sample)


def atomic_script(name: str, script: str, *, keys: Callable[[KeySample], list[str]]) -> str:
    """Register a Lua script and the keys it is called with; returns the script."""
    ATOMIC_USES[name] = AtomicUse(name=name, keys=keys, script=script)
    return script


def atomic_command(name: str, *, keys: Callable[[KeySample], list[str]]) -> None:
    ATOMIC_USES[name] = AtomicUse(name=name, keys=keys)


def cross_slot_uses(uses: list[AtomicUse], samples: list[KeySample]) -> dict[str, list[str]]:
    """The uses whose keys, for some sample, span more than one slot: name -> keys."""
    found: dict[str, list[str]] = {}
    for use in uses:
        for sample in samples:
            used = use.keys(sample)
            if len({key_slot(key) for key in used}) > 1:
                found[use.name] = used
                break
    return found


def untagged_patterns(patterns: list[KeyPattern], samples: list[KeySample]) -> list[str]:
    """Patterns whose keys carry no hash tag (their slot would be chosen by accident)."""
    bad = []
    for pattern in patterns:
        key = pattern.sample(samples[0])
        start = key.find("{")
        if start < 0 or key.find("}", start + 2) < 0:
            bad.append(pattern.name)
    return bad


def registered_modules() -> list[str]:
    """The modules that own Redis keys; importing them fills the registry."""
    return [
        "idempotency.redis_fast_path",
        "realtime.keys",
        "realtime.publishing",
        "realtime.replay",
        "realtime.connection_limits",
        "realtime.stats",
        "replicas.positions",
        "accounts.redis_counters",
        "accounts.rate_limit",
        "accounts.login_throttle",
    ]
