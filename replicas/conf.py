"""The app's settings, read lazily from django.conf.settings so tests can override them.

Names and defaults are listed in README.md; config/settings.py reads them from the
environment.
"""

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class ReplicaSettings:
    enabled: bool
    check_interval_seconds: float
    lag_warning_seconds: float
    lag_critical_seconds: float
    rejoin_after_checks: int
    check_timeout_seconds: float
    read_timeout_seconds: float
    breaker_cooldown_seconds: float
    position_ttl_seconds: float
    catch_up_wait_seconds: float
    routing_header: bool

    @property
    def check_period_seconds(self) -> float:
        """How often the checker runs: the configured interval, but at least four times
        per critical-lag window, because bounded staleness is enforced from the age of
        the last check (a replica whose last good check is too old leaves rotation)."""
        return max(0.05, min(self.check_interval_seconds, self.lag_critical_seconds / 4))


def replica_settings() -> ReplicaSettings:
    critical = float(getattr(settings, "REPLICA_LAG_CRITICAL_SECONDS", 10))
    return ReplicaSettings(
        enabled=bool(getattr(settings, "USE_READ_REPLICAS", True)),
        check_interval_seconds=float(getattr(settings, "REPLICA_HEALTH_CHECK_INTERVAL", 30000)) / 1000,
        lag_warning_seconds=float(getattr(settings, "REPLICA_LAG_WARNING_SECONDS", 5)),
        lag_critical_seconds=critical,
        rejoin_after_checks=max(1, int(getattr(settings, "REPLICA_REJOIN_AFTER_CHECKS", 3))),
        check_timeout_seconds=float(getattr(settings, "REPLICA_CHECK_TIMEOUT_MS", 1000)) / 1000,
        read_timeout_seconds=float(getattr(settings, "REPLICA_READ_TIMEOUT_MS", 5000)) / 1000,
        breaker_cooldown_seconds=float(getattr(settings, "REPLICA_BREAKER_COOLDOWN_SECONDS", 5)),
        # A position older than the critical lag is met by every routable replica, so
        # it need not be kept longer than that (see docs/replicas.md).
        position_ttl_seconds=max(float(getattr(settings, "REPLICA_POSITION_TTL_SECONDS", 30)), critical + 1),
        catch_up_wait_seconds=float(getattr(settings, "REPLICA_CATCH_UP_WAIT_MS", 20)) / 1000,
        routing_header=bool(getattr(settings, "REPLICA_ROUTING_HEADER", False)),
    )
