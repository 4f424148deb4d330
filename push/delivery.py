"""The delivery queue: claim due rows, re-check them, record what the push service said.

At most once: a row is committed as `sending` (attempts + 1) before its request
leaves, and only a worker that got an answer puts it back to `pending` (429/5xx). A
worker that dies mid-send leaves the row `sending`; nobody claims it again, and after
PUSH_LOST_AFTER_SECONDS it is marked `lost` and counted. Membership, preferences, the
device and (for sync pokes) open sockets are re-checked in the claiming transaction.
"""

import datetime
import logging
import random
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from push import metrics
from push.fanout import threshold_reached
from push.models import Delivery, DeliveryStatus, NotificationPreference, NotificationType
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


def _collapse_key(delivery: Delivery) -> str | None:
    if delivery.notification_type == NotificationType.SYNC_POKE:
        return f"sync-{delivery.org_id}"
    return None


def _skip_reason(  # noqa: PLR0911 (one reason per check reads best)
    delivery: Delivery,
    members: set[tuple[str, str]],
    preferences: dict[tuple[str, str], NotificationPreference],
    with_socket: set[tuple[str, str]],
) -> str:
    """Why this delivery must not go out now, or "" if it may."""
    device = delivery.device
    key = (str(delivery.org_id), str(delivery.user_id))
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


def deliveries_claim(*, limit: int) -> list[Claimed]:
    """Claim up to `limit` due deliveries for sending (committed before returning)."""
    if limit <= 0:
        return []
    now = timezone.now()
    with transaction.atomic():
        due = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("device")
            .filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at")[:limit]
        )
        if not due:
            return []
        org_ids = {d.org_id for d in due}
        user_ids = {d.user_id for d in due}
        members = {
            (str(org), str(user))
            for org, user in Membership.objects.filter(org_id__in=org_ids, user_id__in=user_ids).values_list(
                "org_id", "user_id"
            )
        }
        preferences = {
            (str(p.org_id), str(p.user_id)): p
            for p in NotificationPreference.objects.filter(org_id__in=org_ids, user_id__in=user_ids)
        }
        with_socket = _open_sockets(due)
        claimed, skipped = [], []
        for delivery in due:
            reason = _skip_reason(delivery, members, preferences, with_socket)
            if reason:
                skipped.append(delivery.id)
                metrics.push_sends.labels(delivery.device.kind, "skipped").inc()
                Delivery.objects.filter(id=delivery.id).update(
                    status=DeliveryStatus.SKIPPED, finished_at=now, last_error=reason
                )
                continue
            claimed.append(
                Claimed(
                    outgoing=Outgoing(
                        delivery_id=str(delivery.id),
                        kind=delivery.device.kind,
                        address=delivery.device.address,
                        notification_type=delivery.notification_type,
                        payload=delivery.payload,
                        collapse_key=_collapse_key(delivery),
                        p256dh=delivery.device.p256dh,
                        auth=delivery.device.auth,
                    ),
                    device_id=delivery.device_id,
                    attempts=delivery.attempts + 1,
                    committed_at=delivery.committed_at,
                )
            )
        if claimed:
            with connection.cursor() as cursor:
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
    Delivery.objects.filter(id=claimed.outgoing.delivery_id, status=DeliveryStatus.SENDING).update(**fields)
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
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE push_delivery d SET status = 'sent', finished_at = %s, last_status_code = s.code, last_error = ''
            FROM unnest(%s::uuid[], %s::int[]) AS s(id, code)
            WHERE d.id = s.id AND d.status = 'sending'
            """,
            [now, [c.outgoing.delivery_id for c, _ in sent], [r.status_code for _, r in sent]],
        )
    for claimed, _ in sent:
        metrics.push_sends.labels(claimed.outgoing.kind, "sent").inc()
        metrics.push_commit_to_send_seconds.labels(claimed.outgoing.notification_type).observe(
            max(0.0, (now - claimed.committed_at).total_seconds())
        )


def deliveries_mark_lost() -> int:
    """Rows left `sending` by a worker that died: never resent, counted as lost."""
    cutoff = timezone.now() - datetime.timedelta(seconds=settings.PUSH_LOST_AFTER_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE push_delivery d SET status = 'lost', finished_at = now(),
                last_error = 'worker died mid-send; not resent'
            FROM push_device v
            WHERE d.status = 'sending' AND d.claimed_at < %s AND v.id = d.device_id
            RETURNING v.kind
            """,
            [cutoff],
        )
        kinds = [row[0] for row in cursor.fetchall()]
    for kind in kinds:
        metrics.push_sends.labels(kind, "lost").inc()
    return len(kinds)


def deliveries_prune(*, batch: int = 1000) -> int:
    """Finished rows older than PUSH_DELIVERY_RETENTION_DAYS (the dedupe window)."""
    cutoff = timezone.now() - datetime.timedelta(days=settings.PUSH_DELIVERY_RETENTION_DAYS)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            DELETE FROM push_delivery WHERE id IN (
                SELECT id FROM push_delivery
                WHERE created_at < %s AND status NOT IN ('pending', 'sending') LIMIT %s)
            """,
            [cutoff, batch],
        )
        return cursor.rowcount


def queue_state() -> tuple[int, datetime.datetime | None]:
    """(pending rows, the earliest next_attempt_at), in one query on the queue index."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), min(next_attempt_at) FROM push_delivery WHERE status = 'pending'")
        count, earliest = cursor.fetchone()
    return int(count), earliest
