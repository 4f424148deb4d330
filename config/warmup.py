"""Warm a gunicorn worker before it takes traffic (gunicorn `post_worker_init`).

Measured on a fresh worker: its first request took ~0.4 s against ~10 ms after, paid
by a real client after every deploy and every worker recycle (max_requests). Importing
every view (the URL resolver) and starting each database pool's connections here
moves that cost before the worker accepts connections. What the warm-up loaded is then
frozen out of the garbage collector's full collections (freeze_warm_objects). The pools fill in the
background (`open(wait=False)`), so a database that is down neither delays nor stops
the worker (health then answers 503).
"""

import gc


def freeze_warm_objects() -> None:
    """Leave what import and warm-up made (modules, classes, the URL resolver, settings)
    out of the collector's full collections from now on: it lives as long as the worker,
    and re-scanning it made each gen2 collection stop all of the worker's threads for
    110-130 ms under `make loadtest` at 20 users (14-49 ms frozen; docs/benchmarks.md).
    Garbage is collected first, so none of it is kept for the worker's lifetime."""
    gc.collect()
    gc.freeze()


def warm_up_worker() -> None:
    from django.db import connections
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (imports every view module)
    for alias in connections:
        pool = getattr(connections[alias], "pool", None)
        if pool is not None:
            pool.open(wait=False)
