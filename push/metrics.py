"""Push metrics, with their fixed label values (no org, user or device id ever).

The worker process (manage.py push_worker) emits them; under bin/serve it shares the
servers' PROMETHEUS_MULTIPROC_DIR, so /v1/system/metrics shows them too.
"""

from prometheus_client import Counter, Gauge, Histogram

KINDS = ("webpush", "fcm", "apns")
# sent, gone (404/410: device deactivated), retry (429/5xx: scheduled again), dead
# (PUSH_MAX_ATTEMPTS reached: dead-lettered), rejected (other 4xx, unknown fate),
# skipped (re-check at send time said no), lost (a worker died mid-send)
OUTCOMES = ("sent", "gone", "retry", "dead", "rejected", "skipped", "lost")
NOTIFICATION_TYPES = ("expense.large", "sync.poke")
COMMIT_TO_SEND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

push_sends = Counter(
    "push_sends_total", "Push send attempts by device kind and outcome.", ["kind", "outcome"]
)
push_queue_depth = Gauge(
    "push_queue_depth",
    "Deliveries waiting to be sent (due now or scheduled for a retry or a sync throttle).",
    multiprocess_mode="livemax",
)
push_queue_oldest_due_seconds = Gauge(
    "push_queue_oldest_due_seconds",
    "How long the oldest due delivery has been waiting (0 when none is due).",
    multiprocess_mode="livemax",
)
push_commit_to_send_seconds = Histogram(
    "push_commit_to_send_seconds",
    "From the commit of the change to the push service's acceptance, per notification type.",
    ["notification_type"],
    buckets=COMMIT_TO_SEND_BUCKETS,
)
push_deliveries_created = Counter(
    "push_deliveries_created_total",
    "Deliveries queued by the fan-out, per notification type.",
    ["notification_type"],
)


def touch_label_sets() -> None:
    """Every series exists (at 0) from the first scrape."""
    for kind in KINDS:
        for outcome in OUTCOMES:
            push_sends.labels(kind, outcome)
    for notification_type in NOTIFICATION_TYPES:
        push_commit_to_send_seconds.labels(notification_type)
        push_deliveries_created.labels(notification_type)
