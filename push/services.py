"""Writes for push: registering and removing devices, setting preferences.

Whatever could give the push fan-out work for an org (a device registered or
reactivated, preferences set) ends the org's quiet period in its own transaction
(changelog.services.org_quiet_end, docs/changelog.md "Quiet orgs"); removing or
deactivating a device only takes work away and needs nothing.
"""

import uuid
from decimal import Decimal

from django.db import IntegrityError, router, transaction
from django.utils import timezone

from accounts.models import User
from changelog.services import member_changes_lock, org_lock_take, org_quiet_end, org_transaction
from push.models import Device, NotificationPreference
from tenancy.models import Membership, Organization


def devices_of_user_may_fire(*, user_id: uuid.UUID | str) -> None:
    """The user's devices may receive notifications of their orgs from this transaction's
    commit on: end the quiet period of every org the user is a member of on the devices'
    database (the one the fan-out reads: orgs elsewhere are never quiet). The member lock
    first, so a membership being added meanwhile is either seen here or ends its org's
    quiet period after this commits."""
    database = router.db_for_write(Device)
    member_changes_lock(user_id=user_id, using=database)
    org_ids = Membership.objects.using(database).filter(user_id=user_id).values_list("org_id", flat=True)
    org_quiet_end(org_ids=list(org_ids), using=database)


@transaction.atomic
def device_register(
    *, user: User, kind: str, address: str, p256dh: str = "", auth: str = ""
) -> tuple[Device, bool]:
    """Register (or refresh) the device with this endpoint or token; returns it and
    whether it is new to this user.

    A token or endpoint names one app install, so registering one that another user
    holds moves it to the caller (the phone changed hands, or its user logged in as
    someone else): the previous user's notifications stop reaching it at once.
    """
    device = Device.objects.select_for_update().filter(kind=kind, address=address).first()
    if device is None:
        try:
            with transaction.atomic():
                device = Device.objects.create(
                    user=user, kind=kind, address=address, p256dh=p256dh, auth=auth
                )
            devices_of_user_may_fire(user_id=user.id)
            return device, True
        except IntegrityError:  # a concurrent registration of the same address won
            device = Device.objects.select_for_update().get(kind=kind, address=address)
    is_new_to_user = device.user_id != user.id
    device.user = user
    device.p256dh, device.auth = p256dh, auth
    device.active, device.last_error, device.deactivated_at = True, "", None
    device.save(update_fields=["user", "p256dh", "auth", "active", "last_error", "deactivated_at"])
    devices_of_user_may_fire(user_id=user.id)
    return device, is_new_to_user


def device_delete(*, device: Device) -> None:
    """Its pending deliveries (on the orgs' clusters) are skipped at send time ("device
    removed"); one already being sent finishes."""
    Device.objects.filter(id=device.id).delete()


def device_deactivate(*, device_id: uuid.UUID, error: str) -> None:
    """The push service said the subscription or token is gone (404/410)."""
    Device.objects.filter(id=device_id, active=True).update(
        active=False, last_error=error[:300], deactivated_at=timezone.now()
    )


def devices_deactivate_of_user(*, user_id: uuid.UUID, error: str) -> int:
    """Every active device of the user stops receiving (logout everywhere): registering
    one again reactivates it. Returns how many."""
    return Device.objects.filter(user_id=user_id, active=True).update(
        active=False, last_error=error[:300], deactivated_at=timezone.now()
    )


def preference_set(
    *,
    org: Organization,
    user: User,
    large_expense_enabled: bool,
    thresholds: dict[str, Decimal],
    sync: bool,
) -> NotificationPreference:
    values = {
        "large_expense_enabled": large_expense_enabled,
        "large_expense_thresholds": {code: f"{amount:.2f}" for code, amount in sorted(thresholds.items())},
        "sync": sync,
    }
    with org_transaction():  # the org's cluster
        # The org's lock, as every writer of the org takes it: a move's fence holds it
        # while it copies the preferences, and a write to the copy an org left is refused.
        org_lock_take(org_id=org.id)
        preference, _ = NotificationPreference.objects.update_or_create(org=org, user=user, defaults=values)
        org_quiet_end(org_ids=[org.id])
    return preference
