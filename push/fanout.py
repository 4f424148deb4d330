"""Fan-out: from one committed org change to one delivery row per (notification, device).

Runs as an after-write handler in the outbox worker, never on the request path, on
the org's cluster (`change.database`, where the outbox row, the memberships, the
preferences and the deliveries live); devices are global (the directory database), so
members are chosen there first and their devices read with a second query. It may run
twice for the same change: every insert is `ON CONFLICT (event_key, device)
DO NOTHING`, and a sync poke already queued or sent with this version or a later one
is not queued again. Membership and preferences are read here to pick the devices, and
read again by the worker just before each send.
"""

import datetime
import json
import logging
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from changelog.dispatch import Change
from core.ids import uuid7
from push import metrics
from push.models import Device, DeviceKind, NotificationType
from realtime.connection_limits import users_with_open_socket
from replicas.topology import topology

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "push_delivery"
SYNC_KINDS = (DeviceKind.FCM.value, DeviceKind.APNS.value)  # silent pokes are for apps


def push_fanout(change: Change) -> None:
    """The change handler: queue large-expense alerts and sync pokes for the change.

    A savepoint around it: if it fails, the outbox worker's transaction (which holds
    other changes of the batch) stays usable, and the change is retried."""
    if change.org_id is None:
        return
    with transaction.atomic(using=change.database):
        if change.topic == "expense.created":
            large_expense_queue(change=change)
        if change.version is not None:
            sync_pokes_queue(change=change)


# Any member with an active device that either fan-out query below could pick: the alert
# on (whatever its thresholds and currencies), or an app device with sync on (whether
# its user has a socket open changes by the second: not a reason to be quiet).
_ORGS_WITH_WORK = """
SELECT DISTINCT m.org_id
FROM tenancy_membership m
JOIN push_device d ON d.user_id = m.user_id AND d.active
LEFT JOIN push_notification_preference p ON p.org_id = m.org_id AND p.user_id = m.user_id
WHERE m.org_id = ANY(%s::uuid[])
  AND (COALESCE(p.large_expense_enabled, false) OR (d.kind = ANY(%s) AND COALESCE(p.sync, true)))
"""


def push_orgs_with_work(org_ids: list[str], database: str) -> set[str]:
    """Those of the orgs the fan-out could queue anything for (the outbox worker asks,
    holding the orgs' counter locks, before marking the rest quiet).

    Only orgs on the database the fan-out reads (`default`, also where devices are
    registered) can be quiet: a device registration ends the quiet period of its user's
    orgs in its own transaction, which it could not do on another cluster."""
    if database != DEFAULT_DB_ALIAS or topology().home.primary != DEFAULT_DB_ALIAS:
        return set(org_ids)
    with connections[database].cursor() as cursor:
        cursor.execute(_ORGS_WITH_WORK, [org_ids, list(SYNC_KINDS)])
        return {str(row[0]) for row in cursor.fetchall()}


def _committed_at(change: Change) -> datetime.datetime:
    """When the change was recorded (in its transaction, just before the commit)."""
    if change.committed_at:
        return datetime.datetime.fromtimestamp(change.committed_at, tz=datetime.UTC)
    return timezone.now()


def _active_devices(
    user_ids: list[uuid.UUID], kinds: tuple[str, ...] | None = None
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(device, user) of the users' active devices, on the directory database."""
    if not user_ids:
        return []
    devices = Device.objects.filter(user_id__in=user_ids, active=True)
    if kinds is not None:
        devices = devices.filter(kind__in=kinds)
    return list(devices.values_list("id", "user_id"))


def _alerted_devices(
    database: str, org_id: str, currency: str
) -> list[tuple[uuid.UUID, uuid.UUID, str | None]]:
    """(device, user, threshold for the currency) of members with the alert on."""
    with connections[database].cursor() as cursor:
        cursor.execute(
            """
            SELECT p.user_id, p.large_expense_thresholds ->> %s
            FROM tenancy_membership m
            JOIN push_notification_preference p ON p.org_id = m.org_id AND p.user_id = m.user_id
            WHERE m.org_id = %s AND p.large_expense_enabled
            """,
            [currency, org_id],
        )
        thresholds = dict(cursor.fetchall())
    return [(device, user, thresholds[user]) for device, user in _active_devices(list(thresholds))]


def threshold_reached(threshold: str | None, amount: Decimal) -> bool:
    if threshold is None:
        return False
    try:
        return amount >= Decimal(threshold)
    except InvalidOperation:
        return False


def large_expense_queue(*, change: Change) -> int:
    data = change.data
    try:
        amount = Decimal(str(data["amount"]))
        currency = str(data["currency"])
        expense_id = str(data.get("id") or change.entity_id)
    except (KeyError, InvalidOperation):
        logger.error("expense.created change without amount or currency (org %s)", change.org_id)
        return 0
    devices = [
        (device_id, user_id)
        for device_id, user_id, threshold in _alerted_devices(change.database, str(change.org_id), currency)
        if threshold_reached(threshold, amount)
    ]
    if not devices:
        return 0
    payload = {
        "type": NotificationType.EXPENSE_LARGE.value,
        "org_id": str(change.org_id),
        "expense_id": expense_id,
        "property_id": str(data.get("property_id")),
        "amount": f"{amount:.2f}",
        "currency": currency,
    }
    return _deliveries_insert(
        database=change.database,
        org_id=str(change.org_id),
        event_key=f"expense.large:{expense_id}",
        notification_type=NotificationType.EXPENSE_LARGE,
        payload=payload,
        devices=devices,
        committed_at=_committed_at(change),
    )


def _deliveries_insert(
    *,
    database: str,
    org_id: str,
    event_key: str,
    notification_type: str,
    payload: dict[str, Any],
    devices: list[tuple[uuid.UUID, uuid.UUID]],
    committed_at: datetime.datetime,
    sync_version: int | None = None,
    not_before: list[datetime.datetime] | None = None,
) -> int:
    if not devices:
        return 0
    now = timezone.now()
    due = not_before or [now] * len(devices)
    with transaction.atomic(using=database), connections[database].cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO push_delivery (id, org_id, user_id, device_id, event_key, notification_type,
                payload, sync_version, status, attempts, next_attempt_at, committed_at, created_at, last_error)
            SELECT d.id, %s, d.user_id, d.device_id, %s, %s, %s::jsonb, %s, 'pending', 0, d.due, %s, %s, ''
            FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::timestamptz[]) AS d(id, user_id, device_id, due)
            ON CONFLICT (event_key, device_id) DO NOTHING
            RETURNING 1
            """,
            [
                org_id,
                event_key,
                notification_type,
                json.dumps(payload),
                sync_version,
                committed_at,
                now,
                [uuid7() for _ in devices],
                [str(user_id) for _, user_id in devices],
                [str(device_id) for device_id, _ in devices],
                due,
            ],
        )
        inserted = len(cursor.fetchall())
        if inserted:
            cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])  # sent at commit
    metrics.push_deliveries_created.labels(notification_type).inc(inserted)
    return inserted


def _users_with_open_socket(org_id: str, user_ids: list[str]) -> set[str]:
    """Fails open: if Redis cannot say, poke (an extra silent poke costs nothing)."""
    try:
        return users_with_open_socket(org_id=org_id, user_ids=user_ids)
    except (redis.RedisError, OSError) as error:
        logger.warning("push: open sockets unknown (%s); sync pokes go to every device", error)
        return set()


def sync_pokes_queue(*, change: Change) -> int:
    """A silent poke for the fcm/apns devices of members with sync on and no open socket
    for the org. Collapsed per org: a poke still waiting takes the newer version; a new
    one waits until PUSH_SYNC_MIN_INTERVAL_SECONDS after the device's previous poke."""
    org_id, version, database = str(change.org_id), int(change.version or 0), change.database
    with connections[database].cursor() as cursor:
        cursor.execute(
            """
            SELECT m.user_id
            FROM tenancy_membership m
            LEFT JOIN push_notification_preference p ON p.org_id = m.org_id AND p.user_id = m.user_id
            WHERE m.org_id = %s AND COALESCE(p.sync, true)
            """,
            [org_id],
        )
        members = [row[0] for row in cursor.fetchall()]
    devices = _active_devices(members, SYNC_KINDS)
    if not devices:
        return 0
    with_socket = _users_with_open_socket(org_id, sorted({str(user_id) for _, user_id in devices}))
    devices = [(device_id, user_id) for device_id, user_id in devices if str(user_id) not in with_socket]
    if not devices:
        return 0
    payload = {"type": NotificationType.SYNC_POKE.value, "org_id": org_id, "version": version}
    interval = datetime.timedelta(seconds=settings.PUSH_SYNC_MIN_INTERVAL_SECONDS)
    with transaction.atomic(using=database), connections[database].cursor() as cursor:
        # One fan-out per org at a time, so two never both queue a poke for a device.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended('push-sync:' || %s, 0))", [org_id])
        cursor.execute(
            """
            UPDATE push_delivery
            SET sync_version = %s, payload = jsonb_set(payload, '{version}', to_jsonb(%s::bigint))
            WHERE org_id = %s AND notification_type = 'sync.poke' AND status = 'pending'
              AND device_id = ANY(%s::uuid[]) AND sync_version < %s
            """,
            [version, version, org_id, [str(d) for d, _ in devices], version],
        )
        cursor.execute(
            """
            SELECT device_id,
                   bool_or(status = 'pending'),
                   max(sync_version) FILTER (WHERE status IN ('pending', 'sending', 'sent')),
                   max(claimed_at) FILTER (WHERE status IN ('sending', 'sent'))
            FROM push_delivery
            WHERE org_id = %s AND notification_type = 'sync.poke' AND device_id = ANY(%s::uuid[])
              AND created_at > now() - interval '1 hour'
            GROUP BY device_id
            """,
            [org_id, [str(d) for d, _ in devices]],
        )
        history = {row[0]: row[1:] for row in cursor.fetchall()}
        now = timezone.now()
        to_queue, not_before = [], []
        for device_id, user_id in devices:
            has_pending, newest_version, last_sent = history.get(device_id, (False, None, None))
            if has_pending or (newest_version is not None and newest_version >= version):
                continue  # collapsed into the waiting poke, or this version already went out
            to_queue.append((device_id, user_id))
            not_before.append(max(now, last_sent + interval) if last_sent else now)
        return _deliveries_insert(
            database=database,
            org_id=org_id,
            event_key=f"sync.poke:{org_id}:{version}",
            notification_type=NotificationType.SYNC_POKE,
            payload=payload,
            devices=to_queue,
            committed_at=_committed_at(change),
            sync_version=version,
            not_before=not_before,
        )
