"""Per-request routing state, kept in contextvars (never threading.local).

The middleware opens a `request_routing()` scope around each request; under WSGI each
request runs in its own thread, under ASGI in its own task, and asgiref copies the
context into the thread that runs a sync view, so the state object is the request's
own in both. Code outside any scope (management commands, shell, background jobs)
reads from the primary.

The org's cluster is a second contextvar, set by `use_org_cluster()` (a block) or
`bind_org_cluster()` (the rest of the request, reset when the scope closes), from
the org directory (directory/); both raise OrgNotRouted for an org it cannot place.
"""

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from replicas.topology import Cluster, topology

UNKNOWN_POSITION = -1  # the client's position could not be read (Redis down, no header)


@dataclass
class RequestRouting:
    client_ids: list[str] = field(default_factory=list)  # hashed credentials of the client
    header_positions: dict[str, int] = field(default_factory=dict)  # cluster -> X-DB-Position
    # lazy: Redis is asked only when a read is about to be routed to a replica
    load_position: Callable[[str, list[str]], int | None] | None = None
    pinned: str | None = None  # why every query now goes to the primary, once pinned
    replicas: dict[str, str] = field(default_factory=dict)  # cluster -> replica chosen for reads
    failed: set[str] = field(default_factory=set)  # replicas that failed during this request
    served: list[str] = field(default_factory=list)  # aliases that answered reads, in order
    wrote_on: Cluster | None = None  # the cluster whose primary committed a write
    writes: int = 0  # committed writes so far in this request
    # (writes routed by then, position) once stored before the response (on commit)
    recorded: tuple[int, int] | None = None
    _positions: dict[str, int | None] = field(default_factory=dict)
    # cluster -> stored position read ahead in another Redis round trip (positions.py)
    _preloaded: dict[str, int | None] = field(default_factory=dict)

    def pin(self, reason: str) -> None:
        if self.pinned is None:
            self.pinned = reason

    def preload_stored_position(self, cluster: str, stored: int | None) -> None:
        """The stored position of `cluster`, read with another Redis command of this
        request: `min_position` then needs no Redis round trip of its own."""
        self._preloaded[cluster] = stored

    def needs_stored_position(self, cluster: Cluster) -> bool:
        return cluster.name not in self._positions and cluster.name not in self._preloaded

    def note_commit(self, cluster: Cluster) -> None:
        self.wrote_on = cluster
        self.writes += 1

    def note_served(self, alias: str) -> None:
        if alias not in self.served:
            self.served.append(alias)

    def min_position(self, cluster: Cluster) -> int | None:
        """The WAL position of `cluster` a replica must have replayed before it may
        serve this client: the newer of the stored one and the header's; UNKNOWN when
        the store is unreachable and the client sent none (only the primary is safe).
        Positions are per cluster: LSNs of different primaries do not compare."""
        if cluster.name not in self._positions:
            header = self.header_positions.get(cluster.name)
            if cluster.name in self._preloaded:
                stored = self._preloaded[cluster.name]
            elif self.load_position and self.client_ids:
                stored = self.load_position(cluster.name, self.client_ids)
            else:
                stored = None
            position: int | None
            if stored == UNKNOWN_POSITION:
                position = header if header is not None else UNKNOWN_POSITION
            else:
                known = [p for p in (stored, header) if p is not None]
                position = max(known) if known else None
            self._positions[cluster.name] = position
        return self._positions[cluster.name]


_routing: ContextVar[RequestRouting | None] = ContextVar("replicas_routing", default=None)
_primary_reads: ContextVar[bool] = ContextVar("replicas_primary_reads", default=False)
PRIMARY_READS_REASON = "access_check"
_cluster: ContextVar[Cluster | None] = ContextVar("replicas_cluster", default=None)
_org: ContextVar[str | None] = ContextVar("replicas_org", default=None)  # for routing logs


def current_routing() -> RequestRouting | None:
    return _routing.get()


def primary_reads_active() -> bool:
    return _primary_reads.get()


@contextmanager
def primary_reads() -> Iterator[None]:
    """Reads in the block go to the primary, without pinning the rest of the request.

    For checks that must see every committed change at once (token and membership:
    a revocation holds from the next request on, whatever a replica has replayed);
    the request's other reads may still use a replica. Inside it, no Redis position
    lookup and no replica probe are made.
    """
    token = _primary_reads.set(True)
    try:
        yield
    finally:
        _primary_reads.reset(token)


def current_cluster() -> Cluster:
    return _cluster.get() or topology().home


def current_org_id() -> str | None:
    """The org whose cluster this scope is bound to, if any."""
    return _org.get()


@contextmanager
def request_routing(state: RequestRouting | None = None) -> Iterator[RequestRouting]:
    state = state or RequestRouting()
    routing_token = _routing.set(state)
    cluster_token, org_token = _cluster.set(None), _org.set(None)
    try:
        yield state
    finally:
        _org.reset(org_token)
        _cluster.reset(cluster_token)
        _routing.reset(routing_token)


def _org_cluster(org_id: uuid.UUID | str) -> Cluster:
    from directory.selectors import org_cluster_get  # the directory's models need the app registry

    return org_cluster_get(org_id=org_id)[0]


@contextmanager
def use_cluster(cluster: Cluster, org_id: uuid.UUID | str | None = None) -> Iterator[Cluster]:
    """Route every query in the block to `cluster` (a move copying an org, a new org
    being created before its placement is cached)."""
    token, org_token = _cluster.set(cluster), _org.set(None if org_id is None else str(org_id))
    try:
        yield cluster
    finally:
        _org.reset(org_token)
        _cluster.reset(token)


@contextmanager
def use_org_cluster(org_id: uuid.UUID | str) -> Iterator[Cluster]:
    """Route every query in the block to the org's cluster (OrgNotRouted if none)."""
    with use_cluster(_org_cluster(org_id), org_id) as cluster:
        yield cluster


def bind_cluster(cluster: Cluster) -> None:
    """For the rest of the current request scope, route to `cluster` (no org)."""
    _cluster.set(cluster)


def bind_org_cluster(org_id: uuid.UUID | str) -> Cluster:
    """For the rest of the current request scope, route to the org's cluster."""
    cluster = _org_cluster(org_id)
    _cluster.set(cluster)
    _org.set(str(org_id))
    return cluster
