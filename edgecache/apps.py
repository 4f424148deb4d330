from django.apps import AppConfig


class EdgecacheConfig(AppConfig):
    name = "edgecache"
    verbose_name = "Edge cache"

    def ready(self) -> None:
        from changelog.dispatch import register_handler
        from changelog.periodic import register_periodic
        from edgecache.purge import purge_for_change, purge_for_changes
        from edgecache.queue import purge_queue_retry

        register_handler("edge_purge", purge_for_change, inline=True, order=20, batch=purge_for_changes)
        # Purges the CDN refused wait in the durable queue; the outbox worker (run by
        # bin/serve) retries them, so no cron is needed (cdn_purge_retry still works).
        register_periodic("edge_purge_retry", purge_queue_retry)
