from django.apps import AppConfig


class ReplicasConfig(AppConfig):
    name = "replicas"
    verbose_name = "Read replicas"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from changelog.dispatch import register_handler
        from replicas import topology
        from replicas.middleware import record_position_for_change, record_position_for_changes

        setting_changed.connect(topology.reset_on_setting_change)
        # First: the org's readers must know the write's position before the purge
        # makes the edge refill (from a replica that may not have the write yet).
        register_handler(
            "replica_position",
            record_position_for_change,
            inline=True,
            order=10,
            batch=record_position_for_changes,
        )
