from django.apps import AppConfig


class EdgecacheConfig(AppConfig):
    name = "edgecache"
    verbose_name = "Edge cache"

    def ready(self) -> None:
        from accounts.access_changes import register_access_handler
        from edgecache.access import edge_access_purge

        register_access_handler("edge_access_purge", edge_access_purge)
