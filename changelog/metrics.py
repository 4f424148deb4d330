"""Change-log metrics, declared next to the code that emits them (label values fixed)."""

from types import SimpleNamespace

from prometheus_client import Counter, Gauge

from monitoring.metrics import declare_labels

HANDLER_OUTCOMES = SimpleNamespace(ok="ok", failed="failed")
DELIVERY_PATHS = SimpleNamespace(inline="inline", worker="worker")

changelog_handler_runs = Counter(
    "changelog_handler_runs_total",
    "Change handler runs, by handler and outcome (ok, failed).",
    ["handler", "outcome"],
)
changelog_deliveries = Counter(
    "changelog_deliveries_total",
    "Changes fully delivered, by path (inline: the request thread; worker: the outbox worker).",
    ["path"],
)
changelog_finish_batches = Counter(
    "changelog_finish_batches_total",
    "Batches in which a server process finished delivered outbox rows (one statement each).",
)
changelog_dead_letters = Counter(
    "changelog_dead_letters_total",
    "Changes moved to the dead-letter state after CHANGELOG_MAX_ATTEMPTS failures.",
)
changelog_outbox_depth = Gauge(
    "changelog_outbox_depth",
    "Outbox rows not yet delivered (pending), as last seen by the outbox worker.",
    multiprocess_mode="max",
)
changelog_outbox_dead = Gauge(
    "changelog_outbox_dead",
    "Outbox rows in the dead-letter state, as last seen by the outbox worker.",
    multiprocess_mode="max",
)
changelog_outbox_oldest_age = Gauge(
    "changelog_outbox_oldest_age_seconds",
    "Age of the oldest pending outbox row (0 when none), as last seen by the outbox worker.",
    multiprocess_mode="max",
)


# Checked after every test (monitoring.metrics.undeclared_label_values); handler names
# are registered at start-up, an open set here.
declare_labels(changelog_handler_runs, handler=None, outcome=tuple(vars(HANDLER_OUTCOMES).values()))
declare_labels(changelog_deliveries, path=tuple(vars(DELIVERY_PATHS).values()))


def touch_known_label_sets() -> None:
    from changelog.dispatch import handlers

    for registered in handlers():
        for outcome in vars(HANDLER_OUTCOMES).values():
            changelog_handler_runs.labels(registered.name, outcome)
    for path in vars(DELIVERY_PATHS).values():
        changelog_deliveries.labels(path)
