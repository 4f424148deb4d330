"""Writes to the org directory. Each change commits on the directory database and
is then published, so every process forgets its cached placement of the org."""

import uuid
from typing import Any

from django.db import connections, transaction
from django.db.models import F
from django.db.models.functions import Now

from directory.cache import directory_changed_publish
from directory.models import OrgPlacement, PlacementState
from replicas.topology import topology

_PLACE = (
    "INSERT INTO org_directory (org_id, cluster, state, generation, updated_at) "
    "VALUES (%s, %s, 'active', 1, now()) ON CONFLICT (org_id) DO NOTHING"
)


def placement_create(*, org_id: uuid.UUID, cluster: str) -> None:
    """Place a new org on `cluster` (no-op when already placed). A new org is never
    cached anywhere (unknown orgs are not cached), so nothing is published."""
    topology().named(cluster)  # never place an org on a cluster nobody can reach
    with connections[topology().home.primary].cursor() as cursor:
        cursor.execute(_PLACE, [str(org_id), cluster])


def placement_on_org_saved(
    *, instance: Any, created: bool, using: str, raw: bool = False, **kwargs: Any
) -> None:
    """post_save of an Organization: place it on the cluster of the database it was
    written to, in that write's transaction when it is the directory's database."""
    if created and not raw:
        cluster = topology().cluster_of_alias(using)
        if cluster is not None:
            placement_create(org_id=instance.pk, cluster=cluster.name)


def placement_delete(*, org_id: uuid.UUID) -> None:
    """Undo `placement_create` when the org's own transaction failed."""
    OrgPlacement.objects.using(topology().home.primary).filter(org_id=org_id).delete()
    directory_changed_publish(org_id)


def placement_change(*, org_id: uuid.UUID, state: PlacementState, cluster: str | None = None) -> int:
    """Set the org's state (and cluster), one generation up; returns the generation.
    Published only after commit (inside a caller's transaction, at its commit)."""
    database = topology().home.primary
    # updated_at on the database's clock: a fence older than its budget is a dead mover's
    changes: dict[str, object] = {"state": state, "generation": F("generation") + 1, "updated_at": Now()}
    if cluster is not None:
        topology().named(cluster)
        changes["cluster"] = cluster
    with transaction.atomic(using=database):
        OrgPlacement.objects.using(database).filter(org_id=org_id).update(**changes)
        generation = (
            OrgPlacement.objects.using(database).values_list("generation", flat=True).get(org_id=org_id)
        )
        transaction.on_commit(lambda: directory_changed_publish(org_id), using=database)
    return generation
