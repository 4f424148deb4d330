"""Reads of the org directory: through the per-process cache, else from the directory
database's primary (a replica may not have a placement that just changed)."""

import datetime
import time
import uuid

from django.conf import settings
from django.db.models.functions import Now

from directory.cache import Placement, directory_cache
from directory.exceptions import OrgMoving
from directory.models import OrgPlacement, PlacementState
from replicas.topology import Cluster, OrgNotRouted, topology


def placement_get(*, org_id: uuid.UUID | str, fresh: bool = False) -> Placement | None:
    """The org's placement, or None when the directory does not know the org.
    `fresh`: skip the cache (a decision that must see the latest row)."""
    org = org_id if isinstance(org_id, uuid.UUID) else uuid.UUID(str(org_id))
    if not fresh:
        cached = directory_cache.get(org)
        if cached is not None:
            return cached
    read_at = time.monotonic()
    row = (
        OrgPlacement.objects.using(topology().home.primary)
        .filter(org_id=org)
        .values_list("cluster", "state", "generation")
        .first()
    )
    if row is None:
        return None
    placement = Placement(org_id=org, cluster=row[0], state=row[1], generation=row[2])
    directory_cache.put(placement, read_at=read_at)
    return placement


def org_cluster_get(*, org_id: uuid.UUID | str) -> tuple[Cluster, Placement]:
    """The cluster holding the org; OrgNotRouted when the directory does not know the
    org, ClusterNotConfigured when it names a cluster this process cannot reach."""
    try:
        placement = placement_get(org_id=org_id)
    except ValueError:
        raise OrgNotRouted(f"{org_id!r} is not an org id") from None
    if placement is None:
        raise OrgNotRouted(f"org {org_id} is not in the org directory")
    return topology().named(placement.cluster), placement


# A mover gives up a switch that outlasts ORG_MOVE_FENCE_SECONDS; a fence older than
# that and this margin was left by a mover that died.
FENCE_ABANDONED_MARGIN_SECONDS = 1.0


def _fence_abandoned(org_id: uuid.UUID | str) -> bool:
    """Whether the org's FENCED state is older than any live mover keeps it (the
    directory's own clock)."""
    limit = datetime.timedelta(seconds=settings.ORG_MOVE_FENCE_SECONDS + FENCE_ABANDONED_MARGIN_SECONDS)
    return (
        OrgPlacement.objects.using(topology().home.primary)
        .filter(org_id=org_id, state=PlacementState.FENCED, updated_at__lt=Now() - limit)
        .exists()
    )


def org_fence_wait(*, org_id: uuid.UUID | str) -> None:
    """Before a write: while the org's move is in its final switch (FENCED), wait for
    it to end, at most ORG_MOVE_FENCE_SECONDS, then OrgMoving (503 with Retry-After).
    The directory is read afresh while waiting: the switch ends by a published flip
    that the cache may not have received yet.

    A fence its mover left behind (killed) does not hold writes: they go on to the
    org's cluster, where the counter lock and the `moved` epoch decide (a live mover
    holds the lock, a finished one left `moved`: 503; else the move did not happen)."""
    try:
        placement = placement_get(org_id=org_id)
    except ValueError:
        return  # not an org id: refused by the caller's own lookup
    if placement is None or placement.state != PlacementState.FENCED or _fence_abandoned(org_id):
        return
    deadline = time.monotonic() + settings.ORG_MOVE_FENCE_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.05)
        placement = placement_get(org_id=org_id, fresh=True)
        if placement is None or placement.state != PlacementState.FENCED:
            return
    if _fence_abandoned(org_id):
        return
    raise OrgMoving()
