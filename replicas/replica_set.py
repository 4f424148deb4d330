"""What this process knows about each replica, and which of them may serve a read.

A replica serves reads only when all of these hold (checked without any I/O):
- it is in rotation: its last check was good, and after a failure or critical lag it
  has passed `REPLICA_REJOIN_AFTER_CHECKS` good checks in a row;
- its circuit breaker is closed (a connection error on the request path opens it for
  `REPLICA_BREAKER_COOLDOWN_SECONDS`);
- its data is provably fresh: `data_as_of` (the newest moment of the primary whose
  state it has replayed) is less than `REPLICA_LAG_CRITICAL_SECONDS` old *now*, not
  merely at the last check. A checker that stalls therefore takes replicas out of
  rotation instead of letting staleness grow unseen.
"""

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from monitoring import metrics
from replicas.conf import replica_settings
from replicas.topology import Cluster, Topology, topology

OK, WARNING, CRITICAL, DOWN, UNKNOWN = "ok", "warning", "critical", "down", "unknown"


@dataclass
class ReplicaState:
    alias: str
    cluster: str
    status: str = UNKNOWN
    in_rotation: bool = False
    ever_checked: bool = False
    good_streak: int = 0
    was_taken_out: bool = False
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    replay_lsn: int | None = None
    data_as_of: float | None = None  # time.monotonic() of the primary state it holds
    breaker_open_until: float = 0.0
    last_checked_at: datetime | None = None
    last_error: str | None = None

    def usable(self, now: float, critical: float) -> bool:
        return (
            self.in_rotation
            and now >= self.breaker_open_until
            and self.data_as_of is not None
            and now - self.data_as_of < critical
        )


@dataclass
class PrimaryState:
    alias: str
    healthy: bool | None = None
    last_checked_at: datetime | None = None
    last_error: str | None = None
    # (monotonic time, flushed WAL position) samples, newest last
    history: deque = field(default_factory=lambda: deque(maxlen=128))

    def data_as_of(self, replay_lsn: int) -> float | None:
        """The newest sampled moment whose WAL the replica has entirely replayed."""
        for sampled_at, lsn in reversed(self.history):
            if lsn <= replay_lsn:
                return sampled_at
        return None


class ReplicaSet:
    def __init__(self, topo: Topology) -> None:
        self.topology = topo
        self.lock = threading.Lock()
        self.replicas: dict[str, ReplicaState] = {
            alias: ReplicaState(alias, cluster.name)
            for cluster in topo.clusters.values()
            for alias in cluster.replicas
        }
        self.primaries: dict[str, PrimaryState] = {
            cluster.name: PrimaryState(cluster.primary) for cluster in topo.clusters.values()
        }

    def of_cluster(self, cluster: Cluster) -> list[ReplicaState]:
        return [self.replicas[alias] for alias in cluster.replicas]

    def usable(self, cluster: Cluster, exclude: set[str]) -> list[ReplicaState]:
        now, critical = time.monotonic(), replica_settings().lag_critical_seconds
        return [s for s in self.of_cluster(cluster) if s.alias not in exclude and s.usable(now, critical)]

    def is_usable(self, alias: str) -> bool:
        state = self.replicas.get(alias)
        return state is not None and state.usable(time.monotonic(), replica_settings().lag_critical_seconds)

    @staticmethod
    def in_balanced_order(states: list[ReplicaState]) -> list[ReplicaState]:
        """Random order weighted by health: a replica in `warning` gets half the reads."""
        remaining = list(states)
        ordered = []
        while remaining:
            weights = [0.5 if s.status == WARNING else 1.0 for s in remaining]
            pick = random.choices(range(len(remaining)), weights)[0]  # noqa: S311 (balancing)
            ordered.append(remaining.pop(pick))
        return ordered

    # --- updates ----------------------------------------------------------------------
    def observe_replay(self, alias: str, replay_lsn: int) -> None:
        """A fresh replay position seen on the request path (read-your-writes probe)."""
        state = self.replicas[alias]
        primary = self.primaries[state.cluster]
        with self.lock:
            if state.replay_lsn is None or replay_lsn > state.replay_lsn:
                state.replay_lsn = replay_lsn
            as_of = primary.data_as_of(replay_lsn)
            if as_of is not None and (state.data_as_of is None or as_of > state.data_as_of):
                state.data_as_of = as_of

    def record_check(
        self,
        alias: str,
        *,
        replay_lsn: int | None,
        lag_seconds: float | None,
        lag_bytes: int | None,
        data_as_of: float | None,
        error: str | None,
    ) -> bool:
        """Apply one check's result; True when the replica has just (re)joined rotation."""
        config = replica_settings()
        state = self.replicas[alias]
        now = time.monotonic()
        joined = False
        with self.lock:
            state.ever_checked = True
            state.last_checked_at = datetime.now(UTC)
            state.last_error = error
            state.lag_bytes = lag_bytes
            state.lag_seconds = lag_seconds
            if error is not None or lag_seconds is None:
                state.status = DOWN if error is not None else CRITICAL
                self._take_out(state)
            else:
                state.replay_lsn = replay_lsn
                state.data_as_of = data_as_of
                if lag_seconds >= config.lag_critical_seconds:
                    state.status = CRITICAL
                    self._take_out(state)
                else:
                    state.status = WARNING if lag_seconds >= config.lag_warning_seconds else OK
                    state.good_streak += 1
                    # A replica joins at its first good check, but once taken out it
                    # rejoins only after several good checks in a row (no flapping).
                    rejoin = not state.was_taken_out or (
                        state.good_streak >= config.rejoin_after_checks and now >= state.breaker_open_until
                    )
                    if not state.in_rotation and rejoin:
                        state.in_rotation = joined = True
        self._export(state)
        return joined

    def record_failure(self, alias: str, error: str) -> None:
        """A connection error on the request path: open the breaker, leave rotation."""
        state = self.replicas[alias]
        with self.lock:
            state.breaker_open_until = time.monotonic() + replica_settings().breaker_cooldown_seconds
            state.status = DOWN
            state.last_error = error
            state.replay_lsn = None  # a restarted replica may report an older position
            self._take_out(state)
        self._export(state)

    def record_primary(self, cluster: str, *, flush_lsn: int | None, error: str | None) -> None:
        primary = self.primaries[cluster]
        with self.lock:
            primary.healthy = error is None
            primary.last_error = error
            primary.last_checked_at = datetime.now(UTC)
            if flush_lsn is not None:
                primary.history.append((time.monotonic(), flush_lsn))

    @staticmethod
    def _take_out(state: ReplicaState) -> None:
        state.in_rotation = False
        state.good_streak = 0
        state.was_taken_out = True

    @staticmethod
    def _export(state: ReplicaState) -> None:
        metrics.db_replica_in_rotation.labels(state.alias).set(1 if state.in_rotation else 0)
        if state.lag_seconds is not None:
            metrics.db_replica_lag_seconds.labels(state.alias).set(state.lag_seconds)
        if state.lag_bytes is not None:
            metrics.db_replica_lag_bytes.labels(state.alias).set(state.lag_bytes)


_current: ReplicaSet | None = None
_current_lock = threading.Lock()


def replica_set() -> ReplicaSet:
    """This process's replica set (rebuilt when the topology settings change)."""
    global _current  # noqa: PLW0603
    topo = topology()
    current = _current
    if current is None or current.topology is not topo:
        with _current_lock:
            if _current is None or _current.topology is not topo:
                _current = ReplicaSet(topo)
            current = _current
    return current


def reset_replica_set() -> None:
    """Forget everything this process knows (tests)."""
    global _current  # noqa: PLW0603
    with _current_lock:
        _current = None
