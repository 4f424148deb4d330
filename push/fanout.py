"""Fan-out: from committed org changes to one delivery row per (notification, device).

Runs as an after-write handler in the outbox worker, never on the request path, for
all the changes of the worker's claim at once, on the orgs' cluster (`change.database`,
where the outbox rows, the memberships, the preferences and the deliveries live);
devices are global (the directory database), so members are chosen there first and
their devices read with a second query. It may run twice for the same change: every
insert is `ON CONFLICT (event_key, device) DO NOTHING`, and a sync poke already queued
or sent with this version or a later one is not queued again. Membership and
preferences are read here to pick the devices, and read again by the worker just
before each send.
"""

import datetime
import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
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
from realtime.connection_limits import open_sockets_of
from replicas.topology import topology

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "push_delivery"
SYNC_KINDS = (DeviceKind.FCM.value, DeviceKind.APNS.value)  # silent pokes are for apps


def push_fanout(change: Change) -> None:
    """The change handler for one change (a batch of one)."""
    push_fanout_batch([change])


def push_fanout_batch(changes: list[Change]) -> None:
    """The change handler: queue the large-expense alerts and sync pokes of `changes`
    (in commit order: the outbox worker hands it every change of a claim at once).

    The same statements whatever the number of changes, orgs and devices, per database:
    members and preferences of every org (one query), their active devices (one, on
    the directory), and when sync pokes are due, the orgs' poke locks, the collapse into
    waiting pokes and the pokes' history (three), then one INSERT of every delivery and
    one NOTIFY. A savepoint around each database's share: if it fails, the outbox
    worker's transaction (which holds the rest of its claim) stays usable, and the
    changes are retried."""
    by_database: dict[str, list[Change]] = {}
    for change in changes:
        if change.org_id is not None:
            by_database.setdefault(change.database, []).append(change)
    for database, theirs in by_database.items():
        with transaction.atomic(using=database):
            _fanout(database, theirs)


# Any member with an active device the fan-out could pick: the alert
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


@dataclass(frozen=True)
class _Alert:
    """A large expense, from its change."""

    org_id: str
    expense_id: str
    amount: Decimal
    currency: str
    payload: str  # JSON
    committed_at: datetime.datetime


@dataclass(frozen=True)
class _Member:
    """A member of an org the batch has work for, and what they want from it."""

    org_id: str
    user_id: str
    thresholds: dict[str, str] | None  # the large-expense alert's, None while it is off
    sync: bool


@dataclass(frozen=True)
class _Queued:
    """One delivery row to insert."""

    org_id: str
    user_id: str
    device_id: str
    event_key: str
    notification_type: str
    payload: str  # JSON
    sync_version: int | None
    due: datetime.datetime
    committed_at: datetime.datetime


def _fanout(database: str, changes: list[Change]) -> None:
    alerts = [alert for change in changes if (alert := _alert_of(change)) is not None]
    # Sync pokes collapse per org (a waiting poke takes the newer version): one poke per
    # org for the batch, with its latest version, owed since its first change.
    pokes: dict[str, tuple[int, datetime.datetime]] = {}
    for change in changes:
        if change.version is not None:
            org_id, committed = str(change.org_id), _committed_at(change)
            version, since = pokes.get(org_id, (change.version, committed))
            pokes[org_id] = (max(version, change.version), min(since, committed))
    members = _members(database, alert_orgs=sorted({a.org_id for a in alerts}), sync_orgs=sorted(pokes))
    if not members:
        return
    devices: dict[str, list[tuple[str, str]]] = {}  # user -> [(device, kind)]
    for device_id, user_id, kind in _active_devices(sorted({m.user_id for m in members})):
        devices.setdefault(str(user_id), []).append((str(device_id), kind))
    now = timezone.now()
    queued = _alerts_queued(alerts, members, devices, now) + _pokes_queued(
        database, pokes, members, devices, now
    )
    _deliveries_insert(database, queued, now)


def _committed_at(change: Change) -> datetime.datetime:
    """When the change was recorded (in its transaction, just before the commit)."""
    if change.committed_at:
        return datetime.datetime.fromtimestamp(change.committed_at, tz=datetime.UTC)
    return timezone.now()


def _alert_of(change: Change) -> _Alert | None:
    if change.topic != "expense.created":
        return None
    data = change.data
    try:
        amount = Decimal(str(data["amount"]))
        currency = str(data["currency"])
        expense_id = str(data.get("id") or change.entity_id)
    except (KeyError, InvalidOperation):
        logger.error("expense.created change without amount or currency (org %s)", change.org_id)
        return None
    payload = {
        "type": NotificationType.EXPENSE_LARGE.value,
        "org_id": str(change.org_id),
        "expense_id": expense_id,
        "property_id": str(data.get("property_id")),
        "amount": f"{amount:.2f}",
        "currency": currency,
    }
    return _Alert(
        str(change.org_id), expense_id, amount, currency, json.dumps(payload), _committed_at(change)
    )


_MEMBERS = """
SELECT m.org_id, m.user_id,
       CASE WHEN m.org_id = ANY(%(alert)s::uuid[]) AND p.large_expense_enabled
            THEN p.large_expense_thresholds::text END,
       m.org_id = ANY(%(sync)s::uuid[]) AND COALESCE(p.sync, true)
FROM tenancy_membership m
LEFT JOIN push_notification_preference p ON p.org_id = m.org_id AND p.user_id = m.user_id
WHERE (m.org_id = ANY(%(alert)s::uuid[]) AND p.large_expense_enabled)
   OR (m.org_id = ANY(%(sync)s::uuid[]) AND COALESCE(p.sync, true))
"""


def _members(database: str, *, alert_orgs: list[str], sync_orgs: list[str]) -> list[_Member]:
    """Members with the alert on (of `alert_orgs`) or sync on (of `sync_orgs`)."""
    if not alert_orgs and not sync_orgs:
        return []
    with connections[database].cursor() as cursor:
        cursor.execute(_MEMBERS, {"alert": alert_orgs, "sync": sync_orgs})
        return [
            _Member(
                str(org_id), str(user_id), None if thresholds is None else json.loads(thresholds), bool(sync)
            )
            for org_id, user_id, thresholds, sync in cursor.fetchall()
        ]


def _active_devices(user_ids: list[str]) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
    """(device, user, kind) of the users' active devices, on the directory database."""
    if not user_ids:
        return []
    return list(Device.objects.filter(user_id__in=user_ids, active=True).values_list("id", "user_id", "kind"))


def threshold_reached(threshold: str | None, amount: Decimal) -> bool:
    if threshold is None:
        return False
    try:
        return amount >= Decimal(threshold)
    except InvalidOperation:
        return False


def _alerts_queued(
    alerts: list[_Alert],
    members: list[_Member],
    devices: dict[str, list[tuple[str, str]]],
    now: datetime.datetime,
) -> list[_Queued]:
    """Every active device of every member whose threshold the expense reaches."""
    alerted: dict[str, list[_Member]] = {}
    for member in members:
        if member.thresholds is not None:
            alerted.setdefault(member.org_id, []).append(member)
    return [
        _Queued(
            org_id=alert.org_id,
            user_id=member.user_id,
            device_id=device_id,
            event_key=f"expense.large:{alert.expense_id}",
            notification_type=NotificationType.EXPENSE_LARGE,
            payload=alert.payload,
            sync_version=None,
            due=now,
            committed_at=alert.committed_at,
        )
        for alert in alerts
        for member in alerted.get(alert.org_id, [])
        if threshold_reached((member.thresholds or {}).get(alert.currency), alert.amount)
        for device_id, _ in devices.get(member.user_id, [])
    ]


def _open_sockets(users_by_org: dict[str, list[str]]) -> set[tuple[str, str]]:
    """Fails open: if Redis cannot say, poke (an extra silent poke costs nothing)."""
    try:
        return open_sockets_of(users_by_org)
    except (redis.RedisError, OSError) as error:
        logger.warning("push: open sockets unknown (%s); sync pokes go to every device", error)
        return set()


# One fan-out per org at a time, so two never both queue a poke for a device; the orgs
# in order, so two workers whose claims share orgs never deadlock.
_POKES_LOCK = (
    "SELECT count(pg_advisory_xact_lock(hashtextextended('push-sync:' || o, 0))) FROM unnest(%s::text[]) o"
)
# A poke still waiting takes the newer version.
_POKES_COLLAPSE = """
UPDATE push_delivery d
SET sync_version = w.version, payload = jsonb_set(d.payload, '{version}', to_jsonb(w.version))
FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[]) AS w(org_id, device_id, version)
WHERE d.org_id = w.org_id AND d.device_id = w.device_id AND d.notification_type = 'sync.poke'
  AND d.status = 'pending' AND d.sync_version < w.version
"""
_POKES_HISTORY = """
SELECT d.org_id, d.device_id,
       bool_or(d.status = 'pending'),
       max(d.sync_version) FILTER (WHERE d.status IN ('pending', 'sending', 'sent')),
       max(d.claimed_at) FILTER (WHERE d.status IN ('sending', 'sent'))
FROM push_delivery d
JOIN unnest(%s::uuid[], %s::uuid[]) AS w(org_id, device_id) ON d.org_id = w.org_id AND d.device_id = w.device_id
WHERE d.notification_type = 'sync.poke' AND d.created_at > now() - interval '1 hour'
GROUP BY d.org_id, d.device_id
"""


def _pokes_queued(
    database: str,
    pokes: dict[str, tuple[int, datetime.datetime]],
    members: list[_Member],
    devices: dict[str, list[tuple[str, str]]],
    now: datetime.datetime,
) -> list[_Queued]:
    """A silent poke for the fcm/apns devices of members with sync on and no open socket
    for the org. Collapsed per org: a poke still waiting takes the newer version; a new
    one waits until PUSH_SYNC_MIN_INTERVAL_SECONDS after the device's previous poke."""
    candidates: dict[str, list[tuple[str, str]]] = {}  # org -> [(device, user)]
    for member in members:
        for device_id, kind in devices.get(member.user_id, []) if member.sync else []:
            if kind in SYNC_KINDS:
                candidates.setdefault(member.org_id, []).append((device_id, member.user_id))
    if not candidates:
        return []
    with_socket = _open_sockets(
        {org: sorted({user for _, user in pairs}) for org, pairs in candidates.items()}
    )
    wanted = [
        (org_id, device_id, user_id)
        for org_id, pairs in sorted(candidates.items())
        for device_id, user_id in pairs
        if (org_id, user_id) not in with_socket
    ]
    if not wanted:
        return []
    org_ids, device_ids = [w[0] for w in wanted], [w[1] for w in wanted]
    with connections[database].cursor() as cursor:
        cursor.execute(_POKES_LOCK, [sorted(set(org_ids))])
        cursor.execute(_POKES_COLLAPSE, [org_ids, device_ids, [pokes[org_id][0] for org_id in org_ids]])
        cursor.execute(_POKES_HISTORY, [org_ids, device_ids])
        history = {(str(row[0]), str(row[1])): row[2:] for row in cursor.fetchall()}
    interval = datetime.timedelta(seconds=settings.PUSH_SYNC_MIN_INTERVAL_SECONDS)
    queued = []
    for org_id, device_id, user_id in wanted:
        version, since = pokes[org_id]
        has_pending, newest_version, last_sent = history.get((org_id, device_id), (False, None, None))
        if has_pending or (newest_version is not None and newest_version >= version):
            continue  # collapsed into the waiting poke, or this version already went out
        payload = {"type": NotificationType.SYNC_POKE.value, "org_id": org_id, "version": version}
        queued.append(
            _Queued(
                org_id=org_id,
                user_id=user_id,
                device_id=device_id,
                event_key=f"sync.poke:{org_id}:{version}",
                notification_type=NotificationType.SYNC_POKE,
                payload=json.dumps(payload),
                sync_version=version,
                due=max(now, last_sent + interval) if last_sent else now,
                committed_at=since,  # owed since the batch's first change of the org
            )
        )
    return queued


_INSERT = """
INSERT INTO push_delivery (id, org_id, user_id, device_id, event_key, notification_type,
    payload, sync_version, status, attempts, next_attempt_at, committed_at, created_at, last_error)
SELECT q.id, q.org_id, q.user_id, q.device_id, q.event_key, q.notification_type,
    q.payload::jsonb, q.sync_version, 'pending', 0, q.due, q.committed_at, %s, ''
FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::bigint[],
            %s::timestamptz[], %s::timestamptz[])
    AS q(id, org_id, user_id, device_id, event_key, notification_type, payload, sync_version, due, committed_at)
ON CONFLICT (event_key, device_id) DO NOTHING
RETURNING notification_type
"""


def _deliveries_insert(database: str, queued: list[_Queued], now: datetime.datetime) -> int:
    """One row per (event, device): a second run of the same change inserts nothing."""
    unique = list({(q.event_key, q.device_id): q for q in queued}.values())
    if not unique:
        return 0
    columns: list[list[Any]] = [
        [uuid7() for _ in unique],
        [q.org_id for q in unique],
        [q.user_id for q in unique],
        [q.device_id for q in unique],
        [q.event_key for q in unique],
        [str(q.notification_type) for q in unique],
        [q.payload for q in unique],
        [q.sync_version for q in unique],
        [q.due for q in unique],
        [q.committed_at for q in unique],
    ]
    with connections[database].cursor() as cursor:
        cursor.execute(_INSERT, [now, *columns])
        created = Counter(row[0] for row in cursor.fetchall())
        if created:
            cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])  # sent at commit
    for notification_type, count in created.items():
        metrics.push_deliveries_created.labels(notification_type).inc(count)
    return sum(created.values())
