from django.apps import AppConfig


class ReplicasConfig(AppConfig):
    name = "replicas"
    verbose_name = "Read replicas"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from replicas import topology

        setting_changed.connect(topology.reset_on_setting_change)
