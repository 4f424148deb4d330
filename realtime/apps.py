from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"

    def ready(self) -> None:
        from accounts.access_changes import register_access_handler
        from realtime import checks  # noqa: F401 (registers the settings checks)
        from realtime.access import access_change_publish

        register_access_handler("realtime_access_publish", access_change_publish)
