from django.apps import AppConfig


class EdgecacheConfig(AppConfig):
    name = "edgecache"
    verbose_name = "Edge cache"

    def ready(self) -> None:
        from changelog.dispatch import register_handler
        from edgecache.purge import purge_for_change, purge_for_changes

        register_handler("edge_purge", purge_for_change, inline=True, order=20, batch=purge_for_changes)
