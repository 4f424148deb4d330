from django.apps import AppConfig


class ChangelogConfig(AppConfig):
    name = "changelog"
    verbose_name = "Org change log"

    def ready(self) -> None:
        # Listed after every app that registers a change handler (settings.INSTALLED_APPS),
        # so each handler's series exist from the first scrape (0, not "no data").
        from changelog.metrics import touch_known_label_sets

        touch_known_label_sets()
