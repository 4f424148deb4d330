"""The DATABASE_ROUTERS router: writes to the org's primary, reads to a fresh replica.

Reads (`db_for_read`), in order of precedence:
1. outside a request scope, with replicas disabled or none configured: the primary;
2. once the request is pinned (an unsafe HTTP method, or a write already routed in
   this request): the primary;
3. inside `atomic()` on the primary: the primary (a transaction sees its own writes
   and one snapshot; a replica would show neither);
4. the replica already chosen for this request, while it stays usable;
5. else a usable replica, in random order weighted by health, that has replayed the
   client's last write position (cached replay position first, then one query to
   the replica when the cache is behind); none: the primary, with the reason.

`select_for_update()` and every write go through `db_for_write`, which pins the request
to the primary. Migrations are allowed on primaries only.
"""

import contextlib
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import psycopg
from django.db import DatabaseError, connections, transaction
from django.db.models import Model

from monitoring.routing_log import log_routing_decision
from replicas.checker import checker
from replicas.conf import replica_settings
from replicas.context import (
    PRIMARY_READS_REASON,
    UNKNOWN_POSITION,
    RequestRouting,
    current_cluster,
    current_org_id,
    current_routing,
    primary_reads_active,
)
from replicas.replica_set import ReplicaState, replica_set
from replicas.stats import routing_stats
from replicas.topology import Cluster, topology
from replicas.watchdog import watchdog

if TYPE_CHECKING:
    from replicas.backend.base import DatabaseWrapper as ReplicaWrapper

logger = logging.getLogger("replicas.router")


def _probe_replay_position(alias: str) -> int | None:
    """The replica's replay position right now, via its own pool (read-your-writes).

    Under the same watchdog as replica reads: a frozen replica is cut after the read
    timeout (the probe fails, the read goes elsewhere), never holding the request."""
    connection = cast("ReplicaWrapper", connections[alias])  # a replica alias: replicas.backend
    try:
        with connection.probe_cursor() as cursor:
            socket = cursor.connection.pgconn.socket
            with watchdog.guard(socket, replica_settings().read_timeout_seconds, f"{alias} (position probe)"):
                cursor.execute("SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn")
                value = cursor.fetchone()[0]
    except (DatabaseError, psycopg.Error) as exc:  # a raw psycopg cursor raises its own errors
        replica_set().record_failure(alias, f"probe failed: {type(exc).__name__}")
        with contextlib.suppress(Exception):
            connection.close()  # a cut connection goes back to the pool, which discards it
        return None
    return None if value is None else int(value)


def choose_read_alias(state: RequestRouting, cluster: Cluster) -> tuple[str, str]:  # noqa: PLR0911
    """(alias, reason) for a read in this request; the reason is for stats."""
    if not replica_settings().enabled or not cluster.replicas:
        return cluster.primary, "replicas_disabled"
    if state.pinned:
        return cluster.primary, state.pinned
    if primary_reads_active():
        return cluster.primary, PRIMARY_READS_REASON
    if connections[cluster.primary].in_atomic_block:
        return cluster.primary, "transaction"
    replicas = replica_set()
    chosen = state.replicas.get(cluster.name)
    if chosen is not None:
        if replicas.is_usable(chosen):
            return chosen, "replica"
        # Left rotation mid-request: another replica might be further behind, and a
        # request must never see its data go back in time. The primary is ahead of all.
        state.pin("replica_left_rotation")
        return cluster.primary, "replica_left_rotation"
    checker.ensure_running()
    candidates = replicas.usable(cluster, exclude=state.failed)
    if not candidates:
        states = replicas.of_cluster(cluster)
        starting = any(not s.ever_checked for s in states)
        return cluster.primary, "replicas_starting" if starting else "no_replica_available"
    position = state.min_position(cluster)
    if position == UNKNOWN_POSITION:
        return cluster.primary, "position_unknown"
    chosen = _first_caught_up(replicas.in_balanced_order(candidates), position)
    if chosen is None:
        return cluster.primary, "replica_behind_client"
    state.replicas[cluster.name] = chosen
    return chosen, "replica"


def read_alias_for_read_only_post() -> str:
    """Where a read carried by a POST (sync pull: a read with a JSON body) goes: where a
    GET of this request would go now, rather than the primary every unsafe method is
    pinned to. Only for a request that has written nothing; everything else it reads
    (its permission checks) stays on the primary."""
    cluster = current_cluster()
    state = current_routing()
    if state is None or state.writes or state.pinned not in (None, "write_request"):
        return cluster.primary
    pinned, state.pinned = state.pinned, None
    try:
        alias, reason = choose_read_alias(state, cluster)
    finally:
        state.pinned = pinned
    routing_stats.read(alias, replica=alias != cluster.primary, reason=reason)
    if alias == cluster.primary:
        state.note_served(alias)
    return alias


def _first_caught_up(candidates: list[ReplicaState], position: int | None) -> str | None:
    if position is None:
        return candidates[0].alias
    for candidate in candidates:
        if candidate.replay_lsn is not None and candidate.replay_lsn >= position:
            return candidate.alias
    for candidate in candidates:  # the cache is behind: ask the replicas themselves
        replay = _probe_replay_position(candidate.alias)
        if replay is not None:
            replica_set().observe_replay(candidate.alias, replay)
            if replay >= position:
                return candidate.alias
    return _wait_for_catch_up(candidates[0].alias, position)


def _wait_for_catch_up(alias: str, position: int) -> str | None:
    """A read right after the client's own write usually finds every replica a few
    milliseconds behind; waiting that long beats loading the primary. Bounded by
    REPLICA_CATCH_UP_WAIT_MS (0 disables it)."""
    deadline = time.monotonic() + replica_settings().catch_up_wait_seconds
    while time.monotonic() < deadline:
        time.sleep(0.002)
        replay = _probe_replay_position(alias)
        if replay is None:
            return None
        replica_set().observe_replay(alias, replay)
        if replay >= position:
            return alias
    return None


def failover_alias(failed_alias: str, *, reason: str, to_primary: bool = False) -> str:
    """Where to re-run a read that failed on `failed_alias` before returning a row."""
    state = current_routing()
    cluster = topology().cluster_of_alias(failed_alias) or current_cluster()
    routing_stats.retry(reason)
    if state is None:
        return cluster.primary
    state.failed.add(failed_alias)
    if state.replicas.get(cluster.name) == failed_alias:
        del state.replicas[cluster.name]
    already_read_a_replica = any(alias in cluster.replicas for alias in state.served)
    if to_primary or already_read_a_replica:
        alias = cluster.primary
    else:
        alias, _ = choose_read_alias(state, cluster)
    if alias == cluster.primary:
        state.pin(f"replica_{reason}")  # the primary is ahead of everything already read
        state.note_served(alias)
    routing_stats.read(alias, replica=alias != cluster.primary, reason=f"retry_after_{reason}")
    log_routing_decision(alias=alias, reason=f"retry_after_{reason}")
    return alias


def _commit_pending(connection: Any, state: RequestRouting, cluster: Cluster) -> bool:
    """Whether this transaction will already note its commit for `state` (one note per
    commit, however many writes it routes). Its first write registers the note, before
    any change-log delivery (whose position handler records the position after the
    commit, covering every write of it): a later write of the same transaction must not
    count as a write after that position, which made the response read the WAL position
    and store it again. A note registered inside a savepoint that rolled back is gone from
    the list, so the next write registers it again."""
    for _savepoints, callback, _robust in connection.run_on_commit:
        if (
            isinstance(callback, partial)
            and callback.func == state.note_commit
            and callback.args == (cluster,)
        ):
            return True
    return False


# Global (not per-org) tables: users, tokens, sessions, the org directory. They live on
# the directory cluster only, whatever org the request is bound to (docs/clusters.md).
GLOBAL_APPS = frozenset({"accounts", "auth", "knox", "contenttypes", "sessions", "admin", "directory"})
# Global models of otherwise per-org apps: a push device belongs to a user, not an org.
GLOBAL_MODELS = frozenset({"push.device"})
# Only on the directory database (elsewhere an empty copy would only mislead).
DIRECTORY_ONLY_APPS = frozenset({"directory"})


def _is_global(model: type[Model]) -> bool:
    return model._meta.app_label in GLOBAL_APPS or model._meta.label_lower in GLOBAL_MODELS


def _org_of(hints: dict[str, Any]) -> object | None:
    """The org the query is for: the instance's, else the one the request is bound to."""
    return getattr(hints.get("instance"), "org_id", None) or current_org_id()


class ReplicaRouter:
    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        if _is_global(model):
            # Users and tokens: always the directory's primary (a login or a revocation
            # holds from the next request on); never pins the org's reads.
            alias = topology().home.primary
            state = current_routing()
            if state is not None and not primary_reads_active():  # access checks are not noted
                state.note_served(alias)
            return alias
        cluster = current_cluster()
        state = current_routing()
        if state is None:
            return cluster.primary
        alias, reason = choose_read_alias(state, cluster)
        is_replica = alias != cluster.primary
        if not is_replica and reason != PRIMARY_READS_REASON:
            # Once a request has read from the primary it stays there: a replica could
            # be behind what it already saw, and its data must not go back in time.
            # (Access checks are the exception: they read only tokens and memberships.)
            if reason != "replicas_disabled":
                state.pin(reason)
            state.note_served(alias)  # replicas are noted when a statement really ran there
        routing_stats.read(alias, replica=is_replica, reason=reason)
        log_routing_decision(alias=alias, reason=reason, model=model._meta.label, org_id=_org_of(hints))
        return alias

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        if _is_global(model):
            return topology().home.primary
        cluster = current_cluster()
        state = current_routing()
        if state is not None:
            state.pin("after_write")
            # The position is handed out only for writes that commit (a rolled-back
            # attempt, e.g. a refused keyed write, must not raise every reader's bar).
            connection = connections[cluster.primary]
            if connection.in_atomic_block:
                if not _commit_pending(connection, state, cluster):
                    transaction.on_commit(partial(state.note_commit, cluster), using=cluster.primary)
            else:
                state.note_commit(cluster)  # autocommit: the statement commits by itself
        routing_stats.write(cluster.primary)
        log_routing_decision(
            alias=cluster.primary, reason="write", model=model._meta.label, org_id=_org_of(hints), write=True
        )
        return cluster.primary

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        if _is_global(type(obj1)) or _is_global(type(obj2)):
            return True  # a tenant row names a global user by id (no constraint across databases)
        topo = topology()
        first = topo.cluster_of_alias(obj1._state.db or "")
        second = topo.cluster_of_alias(obj2._state.db or "")
        if first is None or second is None:
            return None
        return first is second

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        """Every app's tables on every primary (so any cluster can take any org; global
        tables stay empty outside the directory cluster), except the directory itself."""
        topo = topology()
        if app_label in DIRECTORY_ONLY_APPS:
            return db == topo.home.primary
        return db in topo.primaries
