"""System checks for the realtime settings: the contract's 60 s bound is configuration."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

MAX_LEASE_SECONDS = 60.0  # CONTRACT §5: a crashed process's slots are free within 60 s


@register()
def realtime_settings_check(app_configs: Any, **kwargs: Any) -> list[Error]:
    errors = []
    lease = settings.REALTIME_LEASE_SECONDS
    heartbeat = settings.REALTIME_HEARTBEAT_SECONDS
    if not 0 < lease <= MAX_LEASE_SECONDS:
        errors.append(
            Error(
                f"REALTIME_LEASE_SECONDS={lease} must be in (0, {MAX_LEASE_SECONDS:g}]: a crashed "
                "process's connection slots are free again only when their leases expire.",
                id="realtime.E001",
            )
        )
    if not 0 < heartbeat <= lease / 2:
        errors.append(
            Error(
                f"REALTIME_HEARTBEAT_SECONDS={heartbeat} must be in (0, REALTIME_LEASE_SECONDS/2]: "
                "a live socket must renew its lease at least twice per lease.",
                id="realtime.E002",
            )
        )
    for name in ("MAX_CONNECTIONS_PER_USER", "MAX_CONNECTIONS_PER_ORG", "REALTIME_SOCKET_QUEUE_SIZE"):
        if getattr(settings, name) < 1:
            errors.append(Error(f"{name} must be at least 1.", id="realtime.E003"))
    return errors
