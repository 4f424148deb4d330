"""Round trips to Redis, for tests that count them (the `redis_wire` fixture records the wire)."""


def written_together(events, first: tuple[bytes, ...], second: tuple[bytes, ...]) -> bool:
    """Whether the batches carrying `first` and `second` (each: all of its parts) were
    both written before any reply was read in between: one round trip (one batch on one
    node; one per node, written before reading, on a cluster)."""
    sends = [n for n, event in enumerate(events) if event[0] == "send"]
    at_first = [n for n in sends if all(part in events[n][1] for part in first)]
    at_second = [n for n in sends if all(part in events[n][1] for part in second)]
    assert len(at_first) == 1 and len(at_second) == 1, (at_first, at_second)
    low, high = sorted((at_first[0], at_second[0]))
    return all(event[0] == "send" for event in events[low:high])
