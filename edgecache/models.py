"""The durable purge queue (an outbox): purges the CDN could not take yet."""

from django.db import models
from django.utils import timezone


class PurgeQueueEntry(models.Model):
    """Tags still to purge. Kept in Postgres so a purge outlives a CDN outage and a
    restart of every server process; `manage.py cdn_purge_retry` sends them."""

    tags = models.JSONField()
    soft = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "edgecache_purge_queue"
        indexes = [models.Index(fields=["next_attempt_at", "id"], name="edgecache_purge_queue_due")]

    def __str__(self) -> str:
        return f"purge {' '.join(self.tags)} (attempt {self.attempts})"
