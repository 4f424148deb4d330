"""Round trips to Redis, for tests that count them (the `redis_wire` fixture records the wire)."""


def written_together(events, first: tuple[bytes, ...], second: tuple[bytes, ...]) -> bool:
    """Whether the batches carrying `first` and `second` (each: all of its parts) were
    all written before their thread read any reply in between: one round trip (one batch
    on one node; on a cluster one batch per node, all written before reading). Another
    thread's reads meanwhile (a background thread's own Redis call) do not count. Raises,
    with what went over the wire, when they were not."""
    sends = [n for n, event in enumerate(events) if event[0] == "send"]
    at_first = [n for n in sends if all(part in events[n][1] for part in first)]
    at_second = [n for n in sends if all(part in events[n][1] for part in second)]
    assert at_first and at_second, (at_first, at_second)
    thread = events[at_first[0]][-1]
    low, high = min(at_first + at_second), max(at_first + at_second)
    if all(event[0] == "send" for event in events[low:high] if event[-1] == thread):
        return True
    raise AssertionError(
        f"not written together: {first} at {at_first}, {second} at {at_second}, thread {thread}:\n"
        + "\n".join(_summary(n, event) for n, event in enumerate(events))
    )


def _summary(n: int, event: tuple) -> str:
    if event[0] != "send":
        return f"{n} read thread={event[-1]}"
    batch = event[1]
    shown = batch if len(batch) <= 200 else batch[:100] + b" ... " + batch[-100:]
    return f"{n} send thread={event[-1]} {len(batch)} bytes {shown!r}"
