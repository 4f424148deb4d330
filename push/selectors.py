"""Reads for push: a user's devices and a member's preferences."""

import uuid

from django.db.models import QuerySet

from accounts.models import User
from push.models import Device, NotificationPreference


def devices_of_user(*, user: User) -> QuerySet[Device]:
    return Device.objects.filter(user=user)


def device_get(*, user: User, device_id: uuid.UUID) -> Device | None:
    """The caller's device, or None (another user's device is as absent as a missing one)."""
    return Device.objects.filter(user=user, id=device_id).first()


def preference_get(*, org_id: uuid.UUID, user: User) -> NotificationPreference:
    """The member's preferences for the org; the defaults (unsaved) when never set."""
    found = NotificationPreference.objects.filter(org_id=org_id, user=user).first()
    return found or NotificationPreference(org_id=org_id, user=user)
