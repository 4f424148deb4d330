"""Round trips to Redis, for tests that count them (the `redis_wire` fixture records the wire)."""


def written_together(events, first: tuple[bytes, ...], second: tuple[bytes, ...]) -> bool:
    """Whether the batches carrying `first` and `second` (each: all of its parts) were
    all written before any reply was read in between: one round trip (one batch on one
    node; on a cluster one batch per node, all written before reading)."""
    sends = [n for n, event in enumerate(events) if event[0] == "send"]
    at_first = [n for n in sends if all(part in events[n][1] for part in first)]
    at_second = [n for n in sends if all(part in events[n][1] for part in second)]
    assert at_first and at_second, (at_first, at_second)
    low, high = min(at_first + at_second), max(at_first + at_second)
    return all(event[0] == "send" for event in events[low:high])
