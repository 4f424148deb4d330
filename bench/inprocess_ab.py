"""A cut's CPU saving per keyed create, in one process: the code with the cut and the
code without it (a switch below), alternating blocks of requests through one WSGI
handler. Run with `make bench-inprocess-ab` (BENCH_AB=<switch>, BENCH_ROUNDS).

On this 2-core machine a server benchmark's per-round noise (±20-40 %) hides a saving of
a few percent, and so does a plain before/after in one process (±25 % between runs).
Alternating the two variants in the same process, block by block, and taking the
median of the per-round differences leaves the neighbours' load out: both variants of
a round meet the same machine. CPU is this process's own (time.process_time): the
request path's Python, its drivers and its syscalls; not Postgres's or Redis's.

Switches (`without` undoes the cut, nothing else):
- riders: the idempotent answer sent in a Redis call of its own after the commit,
  instead of riding in the write position's round trip (core.redis_riders).
"""

import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "1000000000")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.core.handlers.wsgi import WSGIHandler

from bench.idempotency import expense_body, make_tenant
from bench.origin_trips import _call, _environ

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))
BLOCK = int(os.environ.get("BENCH_BLOCK", "100"))


@contextmanager
def _riders_off() -> Iterator[None]:
    from replicas import positions

    real = positions.after_commit_riders_take
    positions.after_commit_riders_take = list  # no rider is ever taken: each is sent alone
    try:
        yield
    finally:
        positions.after_commit_riders_take = real


SWITCHES: dict[str, Callable[[], AbstractContextManager[None]]] = {"riders": _riders_off}


def main() -> None:
    name = os.environ.get("BENCH_AB", "riders")
    without = SWITCHES[name]
    org, prop, token = make_tenant()
    body = expense_body(prop.id).encode()
    handler = WSGIHandler()

    def create() -> bool:
        return _call(
            handler, _environ("POST", f"/v1/orgs/{org.id}/expenses", token, body, key=f"k-{uuid.uuid4()}")
        )

    for _ in range(50):  # warm: connections, prepared statements, caches
        assert create()
    runs: dict[str, list[float]] = {"with": [], "without": []}
    for round_number in range(ROUNDS):
        order = ("with", "without") if round_number % 2 == 0 else ("without", "with")
        for variant in order:
            with without() if variant == "without" else _nothing():
                started = time.process_time()
                for _ in range(BLOCK):
                    assert create()
                runs[variant].append(1000 * (time.process_time() - started) / BLOCK)
        print(f"round {round_number + 1:2}/{ROUNDS}: with {runs['with'][-1]:.2f} ms, without {runs['without'][-1]:.2f} ms",
              flush=True)  # fmt: skip
    saved = [b - a for a, b in zip(runs["with"], runs["without"], strict=True)]
    print(f"\n{name}: CPU per keyed create in this process, {ROUNDS} alternating rounds of {BLOCK}")
    print(f"  with the cut    median {statistics.median(runs['with']):.3f} ms")
    print(f"  without it      median {statistics.median(runs['without']):.3f} ms")
    print(f"  saved per round median {1000 * statistics.median(saved):.0f} us "
          f"({100 * statistics.median(saved) / statistics.median(runs['without']):.1f} %), "
          f"rounds where it saved: {sum(s > 0 for s in saved)}/{ROUNDS}")  # fmt: skip


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    main()
