"""The org change log: a per-org counter, the outbox behind it, and tombstones.

- `OrgChangeCounter` (`org_changes`): one row per org. Every write transaction bumps it
  first (`org_version_take`) and holds its row lock until commit, so an org's versions
  commit in order and a reader of the log never skips a late commit. `epoch` changes
  when the org's history is rewritten (restore, move, tombstone horizon): sync cookies
  from an older epoch get `reset`. `quiet_until`: while in the future, the org's
  changes need no deferred handler.
- `OutboxEntry`: one row per committed change, written in the change's transaction,
  deleted once every handler has run. What is left is what a crash interrupted; the
  outbox worker delivers it (changelog/worker.py).
- `Tombstone`: a deleted entity, kept SYNC_TOMBSTONE_DAYS so offline clients learn of
  the deletion.

All three live on the org's cluster; none has a foreign key to the org, so the org's
rows can move between databases as a unit (Citus-ready).
"""

from django.db import models


class OrgChangeCounter(models.Model):
    org_id = models.UUIDField(primary_key=True)
    version = models.BigIntegerField(default=0)
    epoch = models.CharField(max_length=32, default="1")
    # Tombstones at or below this version were pruned: older cookies must reset.
    pruned_through = models.BigIntegerField(default=0)
    # Until then no deferred handler (push fan-out) has work for the org: its changes
    # are deleted on the request thread and never reach the outbox worker. Set by the
    # worker under this row's lock; cleared by whatever could give a handler work
    # (docs/changelog.md "Quiet orgs").
    quiet_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "org_changes"

    def __str__(self) -> str:
        return f"org {self.org_id} at version {self.version}"


class OutboxState(models.TextChoices):
    PENDING = "pending"
    DEAD = "dead"


class OutboxEntry(models.Model):
    id = models.BigAutoField(primary_key=True)
    org_id = models.UUIDField(null=True)
    version = models.BigIntegerField(null=True)  # None for access changes (not in the org's order)
    topic = models.CharField(max_length=64)
    entity_id = models.UUIDField(null=True)
    user_id = models.UUIDField(null=True)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    available_at = models.DateTimeField()  # the worker leaves it alone until then
    inline_done = models.BooleanField(default=False)  # request thread ran the inline handlers
    attempts = models.IntegerField(default=0)
    state = models.CharField(max_length=8, choices=OutboxState.choices, default=OutboxState.PENDING)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "changelog_outbox"
        verbose_name_plural = "outbox entries"
        indexes = [
            models.Index(
                fields=["available_at"],
                name="changelog_outbox_due",
                condition=models.Q(state="pending"),
            ),
            models.Index(fields=["org_id", "version"], name="changelog_outbox_org_version"),
        ]

    def __str__(self) -> str:
        return f"{self.topic} v{self.version} of {self.org_id}"


class Tombstone(models.Model):
    id = models.BigAutoField(primary_key=True)
    org_id = models.UUIDField()
    entity = models.CharField(max_length=16)
    entity_id = models.UUIDField()
    version = models.BigIntegerField()
    deleted_at = models.DateTimeField()

    class Meta:
        db_table = "changelog_tombstone"
        indexes = [models.Index(fields=["org_id", "version"], name="changelog_tombstone_org_ver")]
        constraints = [
            models.UniqueConstraint(fields=["org_id", "entity_id"], name="changelog_tombstone_org_entity")
        ]

    def __str__(self) -> str:
        return f"{self.entity} {self.entity_id} deleted at v{self.version}"
