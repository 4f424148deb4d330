"""A change's CPU per keyed create, in one process: the code as it is and the code with a
switch thrown (a cut undone, a layer removed), alternating blocks of requests through
WSGI handlers. Run with `make bench-inprocess-ab` (BENCH_AB=<switch>, BENCH_ROUNDS).

On this 2-core machine a server benchmark's per-round noise (±20-40 %) hides a change of
a few percent, and so does a plain before/after in one process (±25 % between runs).
Alternating the two variants in the same process, block by block, and taking the
median of the per-round differences leaves the neighbours' load out: both variants of
a round meet the same machine. CPU is this process's own (time.process_time): the
request path's Python, its drivers and its syscalls; not Postgres's or Redis's.

Switches (each changes one thing; the figure is switched minus as-is, so a cut undone
shows its saving as a positive number and a layer removed its cost as a negative one):
- riders: the idempotent answer sent in a Redis call of its own after the commit,
  instead of riding in the write position's round trip (core.redis_riders);
- django-prometheus: its two request middlewares removed (the per-request, per-view
  counters and histograms; its per-statement database metrics stay).

The ledger of the guarantees (measurement only: each removes one guarantee's work from
the request path, which the product never does), to say what each costs in this process:
- position: the change log's replica-position handler a no-op (read-your-writes; the
  idempotent answer then goes alone, as when no position is stored);
- purge: the edge-purge handler a no-op (the edge's freshness before the response);
- publish: the realtime handler a no-op (ordered socket events; the outbox worker would
  publish them later);
- key: the create sent without an Idempotency-Key (exactly-once: the claim, the record
  in the transaction, the kept answer).
Several at once: BENCH_AB=position+purge+publish+key.
"""

import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# bench.origin_trips sets Django up as both benchmarks need it (the rate limit never reached).
import bench.origin_trips  # noqa: F401

# isort: split
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

from bench.idempotency import expense_body, make_tenant
from bench.wsgi_calls import wsgi_call, wsgi_environ

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


def _handler_off(name: str) -> Callable[[], AbstractContextManager[None]]:
    """The change log's inline handler `name` replaced by one that does nothing."""

    @contextmanager
    def off() -> Iterator[None]:
        from changelog import dispatch

        (real,) = [h for h in dispatch.handlers(inline=True) if h.name == name]
        dispatch.register_handler(name, lambda change: None, inline=True, order=real.order)
        try:
            yield
        finally:
            dispatch.register_handler(
                name, real.handler, inline=True, order=real.order, batch=real.batch, work_for=real.work_for
            )

    return off


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@dataclass(frozen=True)
class Switch:
    patches: tuple[Callable[[], AbstractContextManager[None]], ...] = ()
    middleware_removed: tuple[str, ...] = field(default=())
    keyed: bool = True

    def __add__(self, other: "Switch") -> "Switch":
        return Switch(
            patches=self.patches + other.patches,
            middleware_removed=self.middleware_removed + other.middleware_removed,
            keyed=self.keyed and other.keyed,
        )

    @contextmanager
    def thrown(self) -> Iterator[None]:
        with ExitStack() as stack:
            for patch in self.patches:
                stack.enter_context(patch())
            yield


SWITCHES = {
    "riders": Switch(patches=(_riders_off,)),
    "django-prometheus": Switch(
        middleware_removed=(
            "django_prometheus.middleware.PrometheusBeforeMiddleware",
            "django_prometheus.middleware.PrometheusAfterMiddleware",
        )
    ),
    "position": Switch(patches=(_handler_off("replica_position"),)),
    "purge": Switch(patches=(_handler_off("edge_purge"),)),
    "publish": Switch(patches=(_handler_off("realtime_event"),)),
    "key": Switch(keyed=False),
}


def _handler(removed: tuple[str, ...]) -> WSGIHandler:
    full = list(settings.MIDDLEWARE)
    assert all(m in full for m in removed), removed
    settings.MIDDLEWARE = [m for m in full if m not in removed]
    try:
        return WSGIHandler()
    finally:
        settings.MIDDLEWARE = full


def main() -> None:
    name = os.environ.get("BENCH_AB", "riders")
    unknown = [part for part in name.split("+") if part not in SWITCHES]
    if unknown:
        sys.exit(f"BENCH_AB: unknown switch(es) {', '.join(unknown)}; known: {', '.join(SWITCHES)}")
    switch = sum((SWITCHES[part] for part in name.split("+")), Switch())
    org, prop, token = make_tenant()
    body = expense_body(prop.id).encode()
    handlers = {"as is": WSGIHandler(), "switched": _handler(switch.middleware_removed)}

    def create(variant: str) -> bool:
        keyed = variant == "as is" or switch.keyed
        key = f"k-{uuid.uuid4()}" if keyed else None
        environ = wsgi_environ("POST", f"/v1/orgs/{org.id}/expenses", token, body, key=key)
        return wsgi_call(handlers[variant], environ)

    for _ in range(50):  # warm: connections, prepared statements, caches
        assert create("as is")
        with switch.thrown():
            assert create("switched")
    runs: dict[str, list[float]] = {"as is": [], "switched": []}
    for round_number in range(ROUNDS):
        order = ("as is", "switched") if round_number % 2 == 0 else ("switched", "as is")
        for variant in order:
            with switch.thrown() if variant == "switched" else _nothing():
                started = time.process_time()
                for _ in range(BLOCK):
                    assert create(variant)
                runs[variant].append(1000 * (time.process_time() - started) / BLOCK)
        print(f"round {round_number + 1:2}/{ROUNDS}: as is {runs['as is'][-1]:.2f} ms, "
              f"switched {runs['switched'][-1]:.2f} ms", flush=True)  # fmt: skip
    delta = [b - a for a, b in zip(runs["as is"], runs["switched"], strict=True)]
    print(f"\n{name}: CPU per keyed create in this process, {ROUNDS} alternating rounds of {BLOCK}")
    print(f"  as is     median {statistics.median(runs['as is']):.3f} ms")
    print(f"  switched  median {statistics.median(runs['switched']):.3f} ms")
    print(f"  switched - as is, per round: median {1000 * statistics.median(delta):+.0f} us "
          f"({100 * statistics.median(delta) / statistics.median(runs['as is']):+.1f} %), "
          f"rounds above zero: {sum(d > 0 for d in delta)}/{ROUNDS}")  # fmt: skip


if __name__ == "__main__":
    main()
