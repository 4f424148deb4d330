"""Commands of one feature sent in another feature's Redis round trip.

A request makes a few Redis calls of its own features; where two of them may go at the
same moment, the second rides in the first's pipeline instead of paying a round trip:

- before the handler, in the per-token rate limit's call (accounts.rate_limit): the
  idempotency claim and the stored read-your-writes position;
- after the write's commit, in the first Redis call made then (the write position
  raised for the org's readers, replicas.positions): the idempotency answer kept for
  replays. A rider waits for that call in `after_commit_rider_add`; the feature that
  queued it takes it back with `after_commit_rider_withdraw` when the call did not
  happen (a rolled-back transaction, a write with no position to store) and then sends
  its commands itself.

On a Redis Cluster a rider's keys may live in other slots than the carrier's: the
pipeline sends each command to its own node.
"""

import threading
from typing import Any, Protocol

from core.redis_clients import Pipeline


class RideAlong(Protocol):
    def queue(self, pipe: Pipeline) -> int:
        """Queue its commands on `pipe` (a pipeline of the non-decoding client); how many."""
        ...

    def answered(self, replies: list[Any]) -> None:
        """Its commands' replies, in their order (bytes, not decoded)."""
        ...

    def failed(self) -> None:
        """Redis did not answer (or the breaker is open): nothing is known of its commands."""
        ...


def riders_answered(riders: list[RideAlong], sizes: list[int], replies: list[Any]) -> None:
    """Hand each rider its own replies: `replies` are the riders' (in the order they were
    queued), `sizes` what each one's `queue` returned."""
    for rider, size in zip(riders, sizes, strict=True):
        rider.answered(replies[:size])
        replies = replies[size:]


_local = threading.local()


def _waiting() -> list[RideAlong]:
    riders: list[RideAlong] | None = getattr(_local, "riders", None)
    if riders is None:
        riders = _local.riders = []
    return riders


def after_commit_rider_add(rider: RideAlong) -> None:
    """Send `rider` with this thread's next after-commit Redis call. Call it only inside
    the transaction whose commit it waits for, and withdraw it after that transaction
    ends (whatever happened)."""
    _waiting().append(rider)


def after_commit_riders_take() -> list[RideAlong]:
    """For a Redis call made after a commit: the riders waiting for one (now taken). The
    caller queues them in its pipeline and tells each `answered` or `failed`."""
    riders = _waiting()
    if not riders:
        return []
    _local.riders = []
    return riders


def after_commit_rider_withdraw(rider: RideAlong) -> None:
    """Take `rider` back if it is still waiting (no after-commit call carried it)."""
    riders = _waiting()
    if rider in riders:
        riders.remove(rider)
