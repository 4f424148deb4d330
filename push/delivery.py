"""The delivery queue: claim due rows, re-check them, record what the push service said.

At most once: a row is committed as `sending` (attempts + 1) before its request
leaves, and only a worker that got an answer puts it back to `pending` (429/5xx). A
worker that dies mid-send leaves the row `sending`; nobody claims it again, and after
PUSH_LOST_AFTER_SECONDS it is marked `lost` and counted. Membership, preferences, the
device and (for sync pokes) open sockets are re-checked in the claiming transaction.

Every function takes the `database` of one cluster's primary: deliveries, memberships
and preferences live on the org's cluster, devices on the directory database (read
with a second query, never joined). A claim skips orgs whose counter row on that
cluster says `moved` (the org left: its rows here are an old copy) or is locked by a
mover's fence (`FOR KEY SHARE ... SKIP LOCKED` conflicts only with the mover's `FOR
UPDATE`, not with writers), so an org's deliveries are sent from one cluster only.
"""

import datetime
import logging
import random
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import redis
from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from directory.exceptions import MOVED_EPOCH
from push import metrics
from push.fanout import threshold_reached
from push.models import Delivery, DeliveryStatus, Device, NotificationPreference, NotificationType
from push.senders.outgoing import Outcome, Outgoing, SendResult
from push.services import device_deactivate
from realtime.connection_limits import users_with_open_socket
from tenancy.models import Membership

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    outgoing: Outgoing
    device_id: uuid.UUID
    attempts: int
    committed_at: datetime.datetime
    database: str  # the primary the delivery row lives on


def _collapse_key(delivery: Delivery) -> str | None:
    if delivery.notification_type == NotificationType.SYNC_POKE:
        return f"sync-{delivery.org_id}"
    return None


def _skip_reason(  # noqa: PLR0911 (one reason per check reads best)
    delivery: Delivery,
    device: Device | None,
    members: set[tuple[str, str]],
    preferences: dict[tuple[str, str], NotificationPreference],
    with_socket: set[tuple[str, str]],
) -> str:
    """Why this delivery must not go out now, or "" if it may."""
    key = (str(delivery.org_id), str(delivery.user_id))
    if device is None:
        return "device removed"
    if not device.active or device.user_id != delivery.user_id:
        return "device inactive or no longer this user's"
    if key not in members:
        return "no longer a member"
    preference = preferences.get(key) or NotificationPreference()
    if delivery.notification_type == NotificationType.EXPENSE_LARGE:
        try:
            amount = Decimal(delivery.payload["amount"])
        except (KeyError, InvalidOperation):
            return "bad payload"
        threshold = preference.large_expense_thresholds.get(delivery.payload.get("currency"))
        if not preference.large_expense_enabled or not threshold_reached(threshold, amount):
            return "large expense alert off or threshold raised"
    elif not preference.sync:
        return "sync off"
    elif key in with_socket:
        return "socket open for the org"
    return ""


def _open_sockets(deliveries: list[Delivery]) -> set[tuple[str, str]]:
    by_org: dict[str, set[str]] = {}
    for delivery in deliveries:
        if delivery.notification_type == NotificationType.SYNC_POKE:
            by_org.setdefault(str(delivery.org_id), set()).add(str(delivery.user_id))
    found: set[tuple[str, str]] = set()
    for org_id, user_ids in by_org.items():
        try:
            found |= {
                (org_id, user) for user in users_with_open_socket(org_id=org_id, user_ids=sorted(user_ids))
            }
        except (redis.RedisError, OSError) as error:  # unknown: poke (harmless if a socket was open)
            logger.warning("push: open sockets unknown (%s)", error)
    return found


_DUE = f"""
SELECT d.id FROM push_delivery d JOIN org_changes c ON c.org_id = d.org_id AND c.epoch <> '{MOVED_EPOCH}'
WHERE d.status = 'pending' AND d.next_attempt_at <= %s
ORDER BY d.next_attempt_at
LIMIT %s
FOR UPDATE OF d SKIP LOCKED FOR KEY SHARE OF c SKIP LOCKED
"""


def deliveries_claim(*, limit: int, database: str = "default") -> list[Claimed]:
    """Claim up to `limit` due deliveries of one cluster for sending (committed before
    returning)."""
    if limit <= 0:
        return []
    now = timezone.now()
    with transaction.atomic(using=database):
        with connections[database].cursor() as cursor:
            cursor.execute(_DUE, [now, limit])
            ids = [row[0] for row in cursor.fetchall()]
        if not ids:
            return []
        due = sorted(Delivery.objects.using(database).filter(id__in=ids), key=lambda d: d.next_attempt_at)
        org_ids = {d.org_id for d in due}
        user_ids = {d.user_id for d in due}
        devices = Device.objects.in_bulk({d.device_id for d in due})  # the directory's
        members = {
            (str(org), str(user))
            for org, user in Membership.objects.using(database)
            .filter(org_id__in=org_ids, user_id__in=user_ids)
            .values_list("org_id", "user_id")
        }
        preferences = {
            (str(p.org_id), str(p.user_id)): p
            for p in NotificationPreference.objects.using(database).filter(
                org_id__in=org_ids, user_id__in=user_ids
            )
        }
        with_socket = _open_sockets(due)
        claimed = []
        for delivery in due:
            device = devices.get(delivery.device_id)
            reason = _skip_reason(delivery, device, members, preferences, with_socket)
            if reason:
                if device is not None:  # a removed device's kind is unknown: not counted
                    metrics.push_sends.labels(device.kind, "skipped").inc()
                Delivery.objects.using(database).filter(id=delivery.id).update(
                    status=DeliveryStatus.SKIPPED, finished_at=now, last_error=reason
                )
                continue
            assert device is not None
            claimed.append(
                Claimed(
                    outgoing=Outgoing(
                        delivery_id=str(delivery.id),
                        kind=device.kind,
                        address=device.address,
                        notification_type=delivery.notification_type,
                        payload=delivery.payload,
                        collapse_key=_collapse_key(delivery),
                        p256dh=device.p256dh,
                        auth=device.auth,
                    ),
                    device_id=delivery.device_id,
                    attempts=delivery.attempts + 1,
                    committed_at=delivery.committed_at,
                    database=database,
                )
            )
        if claimed:
            with connections[database].cursor() as cursor:
                cursor.execute(
                    """
                    UPDATE push_delivery SET status = 'sending', attempts = attempts + 1, claimed_at = %s
                    WHERE id = ANY(%s::uuid[])
                    """,
                    [now, [c.outgoing.delivery_id for c in claimed]],
                )
    return claimed


def retry_delay(*, attempts: int, retry_after: float | None) -> float:
    """The service's Retry-After when it gave one, else exponential backoff with jitter."""
    if retry_after is not None:
        return min(retry_after, settings.PUSH_RETRY_MAX_SECONDS)
    backoff = settings.PUSH_RETRY_BASE_SECONDS * 2 ** (attempts - 1)
    return min(backoff, settings.PUSH_RETRY_MAX_SECONDS) * random.uniform(0.8, 1.2)  # noqa: S311


def delivery_record(*, claimed: Claimed, result: SendResult) -> str:
    """Store the answer; returns the outcome label counted."""
    now = timezone.now()
    fields: dict[str, object] = {"last_status_code": result.status_code, "last_error": result.error[:300]}
    outcome = result.outcome.value
    if result.outcome is Outcome.SENT:
        fields |= {"status": DeliveryStatus.SENT, "finished_at": now}
        metrics.push_commit_to_send_seconds.labels(claimed.outgoing.notification_type).observe(
            max(0.0, (now - claimed.committed_at).total_seconds())
        )
    elif result.outcome is Outcome.GONE:
        fields |= {"status": DeliveryStatus.GONE, "finished_at": now}
        device_deactivate(device_id=claimed.device_id, error=result.error or f"HTTP {result.status_code}")
    elif result.outcome is Outcome.RETRY and claimed.attempts < settings.PUSH_MAX_ATTEMPTS:
        delay = retry_delay(attempts=claimed.attempts, retry_after=result.retry_after)
        fields |= {
            "status": DeliveryStatus.PENDING,
            "next_attempt_at": now + datetime.timedelta(seconds=delay),
        }
    elif result.outcome is Outcome.RETRY:
        fields |= {"status": DeliveryStatus.DEAD, "finished_at": now}
        outcome = "dead"
        logger.warning("push delivery %s dead-lettered: %s", claimed.outgoing.delivery_id, result.error)
    else:
        fields |= {"status": DeliveryStatus.REJECTED, "finished_at": now}
        logger.warning("push delivery %s rejected: %s", claimed.outgoing.delivery_id, result.error)
    Delivery.objects.using(claimed.database).filter(
        id=claimed.outgoing.delivery_id, status=DeliveryStatus.SENDING
    ).update(**fields)
    metrics.push_sends.labels(claimed.outgoing.kind, outcome).inc()
    return outcome


def deliveries_record(*, outcomes: list[tuple[Claimed, SendResult]]) -> None:
    """Store many answers: the successes (nearly all of them) in one statement."""
    sent = [(claimed, result) for claimed, result in outcomes if result.outcome is Outcome.SENT]
    for claimed, result in outcomes:
        if result.outcome is not Outcome.SENT:
            delivery_record(claimed=claimed, result=result)
    if not sent:
        return
    now = timezone.now()
    for database in sorted({claimed.database for claimed, _ in sent}):
        here = [(c, r) for c, r in sent if c.database == database]
        with connections[database].cursor() as cursor:
            cursor.execute(
                """
                UPDATE push_delivery d
                SET status = 'sent', finished_at = %s, last_status_code = s.code, last_error = ''
                FROM unnest(%s::uuid[], %s::int[]) AS s(id, code)
                WHERE d.id = s.id AND d.status = 'sending'
                """,
                [now, [c.outgoing.delivery_id for c, _ in here], [r.status_code for _, r in here]],
            )
    for claimed, _ in sent:
        metrics.push_sends.labels(claimed.outgoing.kind, "sent").inc()
        metrics.push_commit_to_send_seconds.labels(claimed.outgoing.notification_type).observe(
            max(0.0, (now - claimed.committed_at).total_seconds())
        )


def deliveries_mark_lost(*, database: str = "default") -> int:
    """Rows left `sending` by a worker that died: never resent, counted as lost."""
    cutoff = timezone.now() - datetime.timedelta(seconds=settings.PUSH_LOST_AFTER_SECONDS)
    with connections[database].cursor() as cursor:
        cursor.execute(
            """
            UPDATE push_delivery SET status = 'lost', finished_at = now(),
                last_error = 'worker died mid-send; not resent'
            WHERE status = 'sending' AND claimed_at < %s
            RETURNING device_id
            """,
            [cutoff],
        )
        device_ids = [row[0] for row in cursor.fetchall()]
    if device_ids:
        kinds = dict(Device.objects.filter(id__in=device_ids).values_list("id", "kind"))
        for device_id in device_ids:
            if device_id in kinds:  # a removed device's kind is unknown: not counted
                metrics.push_sends.labels(kinds[device_id], "lost").inc()
    return len(device_ids)


def deliveries_prune(*, database: str = "default", batch: int = 1000) -> int:
    """Finished rows older than PUSH_DELIVERY_RETENTION_DAYS (the dedupe window)."""
    cutoff = timezone.now() - datetime.timedelta(days=settings.PUSH_DELIVERY_RETENTION_DAYS)
    with connections[database].cursor() as cursor:
        cursor.execute(
            """
            DELETE FROM push_delivery WHERE id IN (
                SELECT id FROM push_delivery
                WHERE created_at < %s AND status NOT IN ('pending', 'sending') LIMIT %s)
            """,
            [cutoff, batch],
        )
        return cursor.rowcount


def queue_state(*, database: str = "default") -> tuple[int, datetime.datetime | None]:
    """(pending rows, the earliest next_attempt_at), in one query on the queue index."""
    with connections[database].cursor() as cursor:
        cursor.execute("SELECT count(*), min(next_attempt_at) FROM push_delivery WHERE status = 'pending'")
        count, earliest = cursor.fetchone()
    return int(count), earliest
