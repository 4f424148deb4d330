from django.apps import AppConfig


class PushConfig(AppConfig):
    name = "push"
    verbose_name = "Push notifications"

    def ready(self) -> None:
        from changelog.dispatch import register_handler
        from push import openapi  # noqa: F401 (registers the device body's schema)
        from push.fanout import push_fanout, push_fanout_batch, push_orgs_with_work

        # Deferred: runs in the outbox worker, never on the request path (CONTRACT §11);
        # an org without any device that could get a notification is marked quiet, and
        # its changes skip the worker (docs/changelog.md "Quiet orgs"). The worker hands
        # it a whole claim at once: the batch form's statements do not grow with it.
        register_handler(
            "push_fanout",
            push_fanout,
            inline=False,
            order=50,
            batch=push_fanout_batch,
            work_for=push_orgs_with_work,
        )
