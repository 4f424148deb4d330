"""Event ids are Redis Stream ids (`<milliseconds>-<sequence>`), ordered as numbers."""

import re

_EVENT_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")


def event_id_key(event_id: str) -> tuple[int, int]:
    """Sort key of a valid event id; raises ValueError for anything else."""
    match = _EVENT_ID.match(event_id)
    if match is None:
        raise ValueError(f"not an event id: {event_id[:40]!r}")
    return int(match[1]), int(match[2])


def frame_with_id(event_id: str, body: str) -> str:
    """The text frame sent on the socket: the stored JSON body with event_id first.

    Bodies are stored without their id (Redis assigns it on XADD), so the frame is
    made by splicing, not by re-encoding the JSON once per socket.
    """
    return '{"event_id":"' + event_id + '",' + body[1:]
