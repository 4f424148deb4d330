"""Opens the routing scope of each request and, after a write, hands out its position.

Before the view: the scope knows the client (a hash of its Authorization header, or of
its session cookie for browser clients such as the admin) and
any `X-DB-Position` it sent; the stored position is only fetched from Redis when a read
is about to be routed to a replica. Unsafe methods (POST, PUT, PATCH, DELETE) are
pinned to the primary from the start: their reads are checks a write depends on.

After the view, when the request committed a write and its caller is authenticated:
the primary's WAL insert position (all commits of the request are done:
ATOMIC_REQUESTS is off, so every transaction has ended) is stored for the client and
returned as `X-DB-Position`. Anonymous or refused requests never raise anyone's bar.
"""

import logging
import re
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse

from replicas.conf import replica_settings
from replicas.context import RequestRouting, request_routing
from replicas.lsn import int_to_lsn, lsn_to_int
from replicas.positions import client_id, position_store
from replicas.topology import HOME_CLUSTER, Cluster

logger = logging.getLogger("replicas.middleware")

POSITION_HEADER = "X-DB-Position"
READ_FROM_HEADER = "X-DB-Read-From"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_ORG_PATH = re.compile(r"^/v1/orgs/([0-9a-fA-F-]{36})(?:/|$)")


def format_position(cluster: Cluster, position: int) -> str:
    """`0/3000148` for the home cluster, `name:0/3000148` for another one."""
    lsn = int_to_lsn(position)
    return lsn if cluster.name == HOME_CLUSTER else f"{cluster.name}:{lsn}"


def parse_positions(header: str) -> dict[str, int]:
    """Comma-separated positions as format_position writes them; junk is ignored (the
    header is only a hint: without it the stored position still applies)."""
    positions: dict[str, int] = {}
    for item in header.split(",")[:8]:
        cluster, _, lsn = item.strip().rpartition(":")
        try:
            value = lsn_to_int(lsn)
        except ValueError:
            logger.info("replicas: ignoring a malformed %s header", POSITION_HEADER)
            continue
        name = cluster or HOME_CLUSTER
        positions[name] = max(value, positions.get(name, 0))
    return positions


def org_reader_id(org_id: str) -> str:
    """The position key shared by every reader of one org."""
    return client_id(f"org {org_id.lower()}")


def routing_for(request: HttpRequest) -> RequestRouting:
    state = RequestRouting(load_position=position_store.load)
    authorization = request.META.get("HTTP_AUTHORIZATION", "")
    if authorization:
        state.client_ids.append(client_id(authorization))
    org = _ORG_PATH.match(request.path)
    if org:
        # Read-your-org's-writes: a write to an org raises the position every reader of
        # that org must see, so a colleague's screen (and the edge's cache fill, which
        # arrives with whichever member missed first) never shows the org older than
        # its last acknowledged write.
        state.client_ids.append(org_reader_id(org.group(1)))
    session = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if session:  # browser clients (admin) are known by their session instead
        state.client_ids.append(client_id(f"session {session}"))
    header = request.META.get("HTTP_X_DB_POSITION", "")
    if header:
        state.header_positions = parse_positions(header[:400])
    if request.method not in _SAFE_METHODS:
        state.pin("write_request")
    return state


def _primary_position(cluster: Cluster) -> int | None:
    """The primary's WAL insert position: the one read with this thread's last COMMIT
    there when nothing ran since (replicas.primary), else a statement of its own."""
    connection = connections[cluster.primary]
    take = getattr(connection, "commit_position_take", None)
    position = take() if take is not None else None
    if position is not None:
        return position
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
            return int(cursor.fetchone()[0])
    except DatabaseError:
        logger.warning("replicas: could not read the primary's WAL position", exc_info=True)
        return None


def record_write_position() -> None:
    """Store the request's write position now, before the response is ready.

    For writes that others learn about before the response (an edge purge makes the
    next reader refill the cache at once): call it from `transaction.on_commit` before
    that side effect, so the refill cannot be served by a replica without the write.
    """
    from replicas.context import current_routing

    state = current_routing()
    if state is None or state.wrote_on is None or not state.client_ids:
        return
    position = _primary_position(state.wrote_on)
    if position is not None:
        position_store.remember(state.wrote_on.name, list(state.client_ids), position)
        state.recorded = (state.writes, position)


def record_position_for_change(change: object) -> None:
    """The change-log handler: on the request thread that wrote, store its position. A
    change delivered by the outbox worker has no request, hence no reader to tell."""
    record_write_position()


def record_position_for_changes(changes: list) -> None:
    """For several changes of one request: the position after the last covers them all."""
    record_write_position()


def _authenticated(request: HttpRequest) -> bool:
    """DRF sets the authenticated user on the Django request; the admin's session
    user is there too. Anonymous callers never get a position recorded for them."""
    user = getattr(request, "user", None)
    return user is not None and bool(getattr(user, "is_authenticated", False))


def finish(state: RequestRouting, request: HttpRequest, response: HttpResponse) -> None:
    cluster = state.wrote_on
    # A refused request (4xx) commits no change even when it opened a transaction (a
    # keyed write's), so it raises no one's bar either.
    if cluster is not None and response.status_code < 400 and _authenticated(request):
        # Already stored on commit, with no write since: reuse it (no second query).
        already = state.recorded is not None and state.recorded[0] == state.writes
        position = state.recorded[1] if already and state.recorded else _primary_position(cluster)
        if position is not None:
            clients = [] if already else list(state.client_ids)
            new_session = response.cookies.get(settings.SESSION_COOKIE_NAME)
            if new_session is not None and new_session.value:  # a login: the next request
                clients.append(client_id(f"session {new_session.value}"))  # uses this cookie
            if clients:
                position_store.remember(cluster.name, clients, position)
            response[POSITION_HEADER] = format_position(cluster, position)
    if replica_settings().routing_header:
        response[READ_FROM_HEADER] = ",".join(state.served) or "none"


class ReplicaRoutingMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        with request_routing(routing_for(request)) as state:
            response = self.get_response(request)
            finish(state, request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        with request_routing(routing_for(request)) as state:
            response = await self.get_response(request)
            await sync_to_async(finish)(state, request, response)
        return response
