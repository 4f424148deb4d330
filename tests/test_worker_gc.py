"""A gunicorn worker freezes what its warm-up loaded out of the garbage collector's full
collections (config/warmup.py): gen2 collections then scan only what requests made.

Run in a fresh interpreter: a freeze is for the process's lifetime, and the test
process's own heap is not the worker's."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = """
import gc, importlib.util, django
django.setup()
spec = importlib.util.spec_from_file_location("gunicorn_config", "config/gunicorn.py")
config = importlib.util.module_from_spec(spec)
spec.loader.exec_module(config)
before = gc.get_freeze_count()
config.post_worker_init(worker=None)
from django.urls import get_resolver
resolver = get_resolver()
gc.collect()
survivors = len(gc.get_objects(generation=2))
print(before, gc.get_freeze_count(), survivors, any(o is resolver for o in gc.get_objects(generation=2)))
"""


def test_post_worker_init_freezes_the_warmed_up_heap() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WORKER], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    before, frozen, survivors, resolver_scanned = result.stdout.split()
    assert int(before) == 0
    # The views, models and settings the warm-up imported: tens of thousands of objects
    # that a full collection no longer walks.
    assert int(frozen) > 50_000
    assert int(frozen) > 5 * int(survivors)
    assert resolver_scanned == "False"
