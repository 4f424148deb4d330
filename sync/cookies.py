"""Pull cookies: where a client stands in its org's change log.

`"<epoch>.<version>"`: the client holds every change up to `version` of the org's
history `epoch`. A page that has to end inside one version (a single version with more
rows than the page's limit: only rows seeded before the change log, all at version 0,
do that) ends on `"<epoch>.<version>.<rank>.<id>"`, the last row sent. Clients treat
cookies as opaque strings.
"""

import re
import uuid
from dataclasses import dataclass

MAX_COOKIE_LENGTH = 200

# The order of entities inside one version (the page key is (version, rank, id)).
ENTITY_RANKS = {"property": 0, "expense": 1, "revenue": 2}


@dataclass(frozen=True)
class Cursor:
    version: int
    rank: int | None = None  # None: after every row of `version`
    id: uuid.UUID | None = None

    @property
    def at_boundary(self) -> bool:
        return self.rank is None


@dataclass(frozen=True)
class Cookie:
    epoch: str
    cursor: Cursor

    def encode(self) -> str:
        c = self.cursor
        if c.at_boundary:
            return f"{self.epoch}.{c.version}"
        return f"{self.epoch}.{c.version}.{c.rank}.{c.id}"


_COOKIE = re.compile(r"([A-Za-z0-9]{1,32})\.(0|[1-9][0-9]{0,18})(?:\.([0-2])\.([0-9a-f-]{36}))?")


def cookie_parse(text: str) -> Cookie | None:
    """The cookie, or None for anything this server never made (the client gets reset)."""
    match = _COOKIE.fullmatch(text) if len(text) <= MAX_COOKIE_LENGTH else None
    if match is None:
        return None
    epoch, version, rank, row_id = match.groups()
    if rank is None:
        return Cookie(epoch=epoch, cursor=Cursor(version=int(version)))
    try:
        return Cookie(epoch=epoch, cursor=Cursor(version=int(version), rank=int(rank), id=uuid.UUID(row_id)))
    except ValueError:
        return None
