"""Devices, per-org notification preferences, and deliveries (the send queue).

A device belongs to a user, not to an org: one phone gets the alerts of every org its
user chose. A delivery is one notification for one device; its (event_key, device)
pair is unique, so a change handler that runs twice, or two workers, never make a
second row, and a row is claimed (committed as `sending`) before its one send.

Devices are global, like users (the directory database); preferences and deliveries
belong to the org and live on its cluster (docs/clusters.md). They name their user and
device by id, without a constraint across databases (`db_constraint=False`), and are
never joined with them in SQL: the device is read with a second query.
"""

from django.conf import settings
from django.db import models

from core.ids import uuid7
from tenancy.models import Organization


class DeviceKind(models.TextChoices):
    WEBPUSH = "webpush"
    FCM = "fcm"
    APNS = "apns"


class Device(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    kind = models.CharField(max_length=8, choices=DeviceKind.choices)
    # Web Push: the subscription endpoint URL; FCM: the registration token; APNs: the
    # device token (hex).
    address = models.CharField(max_length=2048)
    p256dh = models.CharField(max_length=100, blank=True, default="")  # Web Push only
    auth = models.CharField(max_length=50, blank=True, default="")  # Web Push only
    active = models.BooleanField(default=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "push_device"
        constraints = [
            models.UniqueConstraint(fields=["kind", "address"], name="push_device_kind_address_uniq")
        ]
        indexes = [models.Index(fields=["user", "created_at"], name="push_device_user_created")]

    def __str__(self) -> str:
        return f"{self.kind} device {self.id}"


class NotificationPreference(models.Model):
    """A member's choices for one org. No row means the defaults: alerts off, sync on."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, db_index=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    large_expense_enabled = models.BooleanField(default=False)
    # {"EUR": "500.00", ...}: decimal strings, one threshold per currency
    large_expense_thresholds = models.JSONField(default=dict, blank=True)
    sync = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "push_notification_preference"
        constraints = [
            models.UniqueConstraint(fields=["org", "user"], name="push_preference_org_user_uniq"),
        ]

    def __str__(self) -> str:
        return f"preferences of {self.user_id} in {self.org_id}"


class NotificationType(models.TextChoices):
    EXPENSE_LARGE = "expense.large"
    SYNC_POKE = "sync.poke"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # waiting for next_attempt_at
    SENDING = "sending"  # claimed by a worker, its one send under way
    SENT = "sent"
    GONE = "gone"  # 404/410: the device was deactivated
    REJECTED = "rejected"  # another 4xx or an unclear transport failure: never resent
    DEAD = "dead"  # PUSH_MAX_ATTEMPTS retryable failures: dead-lettered
    SKIPPED = "skipped"  # no longer a member, preference off, device gone, socket open
    LOST = "lost"  # its worker died mid-send; never resent (at most once)


class Delivery(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, db_index=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    # A removed device's pending deliveries stay, and are skipped at send time (the
    # device is on another database: nothing can cascade to every cluster).
    device = models.ForeignKey(Device, on_delete=models.DO_NOTHING, db_index=False, db_constraint=False)
    # "expense.large:<expense id>" or "sync.poke:<org id>:<version>"
    event_key = models.CharField(max_length=120)
    notification_type = models.CharField(max_length=16, choices=NotificationType.choices)
    payload = models.JSONField()
    sync_version = models.BigIntegerField(null=True, blank=True)  # sync pokes: the org version sent
    status = models.CharField(max_length=8, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    committed_at = models.DateTimeField()  # when the change that caused it committed
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "push_delivery"
        constraints = [
            models.UniqueConstraint(fields=["event_key", "device"], name="push_delivery_event_device_uniq"),
        ]
        # The queue's own indexes (due, in flight, age) span the cluster's orgs, like the
        # change log's outbox: a worker takes what is due across all orgs of a cluster. The org's lookups lead
        # with org_id.
        indexes = [
            # the queue: what is due, oldest first
            models.Index(
                fields=["next_attempt_at"],
                name="push_delivery_due",
                condition=models.Q(status="pending"),
            ),
            # in-flight rows whose worker may have died
            models.Index(
                fields=["claimed_at"], name="push_delivery_sending", condition=models.Q(status="sending")
            ),
            # sync throttling: an org's latest pokes per device
            models.Index(
                fields=["org", "device", "created_at"],
                name="push_delivery_sync",
                condition=models.Q(notification_type="sync.poke"),
            ),
            models.Index(fields=["created_at"], name="push_delivery_created"),
        ]

    def __str__(self) -> str:
        return f"{self.notification_type} to {self.device_id} ({self.status})"
