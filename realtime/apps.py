from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"

    def ready(self) -> None:
        from changelog.dispatch import register_handler
        from realtime import checks  # noqa: F401 (registers the settings checks)
        from realtime.access import access_change_publish
        from realtime.publishing import publish_change, publish_changes

        register_handler("realtime_event", publish_change, inline=True, order=30, batch=publish_changes)
        register_handler("realtime_access", access_change_publish, inline=True, order=31)
