from django.core.management.base import BaseCommand

from push.worker import run_worker


class Command(BaseCommand):
    help = "Send queued push notifications (Web Push, FCM, APNs) until stopped (SIGTERM)."

    def handle(self, *args: object, **options: object) -> None:
        run_worker()
