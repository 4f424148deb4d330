"""The org directory: which database cluster holds each org (CONTRACT §13).

A global table, on the directory database (`DIRECTORY_CLUSTER`), next to users and
tokens. `generation` goes up by one at every change of the row (a move's steps), so a
process can tell an old cached placement from the current one.
"""

from django.db import models


class PlacementState(models.TextChoices):
    ACTIVE = "active"  # reads and writes on `cluster`
    MOVING = "moving"  # still served by `cluster`; a copy is being made elsewhere
    FENCED = "fenced"  # the final switch: writes answer 503 with Retry-After


class OrgPlacement(models.Model):
    org_id = models.UUIDField(primary_key=True)
    cluster = models.CharField(max_length=64)
    state = models.CharField(max_length=8, choices=PlacementState.choices, default=PlacementState.ACTIVE)
    generation = models.BigIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "org_directory"
        indexes = [models.Index(fields=["cluster"], name="org_directory_cluster")]

    def __str__(self) -> str:
        return f"org {self.org_id} on {self.cluster} ({self.state})"
