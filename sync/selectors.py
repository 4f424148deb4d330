"""Pull: the org's changes after a client's cookie, one page, from one snapshot.

One SQL statement reads the org's counter (version, epoch, tombstone horizon), the
client's last mutation id and the page of changes: a statement sees one snapshot in
any isolation level, so the three always agree, on a replica or the primary, inside the
Idempotency-Key transaction or not, and a replica failing over moves the whole read.
Since every writer takes the org's counter lock and holds it until commit, a snapshot
that shows counter version C shows every change numbered up to C and none after it:
a page never skips a change that commits late (docs/sync.md).

Pages follow the key (version, entity rank, id): rows and tombstones with a key above
the cursor, up to `limit`, cut back to the last whole version when the page would end
inside one. Only a single version larger than a page (rows seeded before the change
log, all at version 0) is cut inside, with the row's key in the cookie.
"""

import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from django.db import connections

from finance.api.serializers import entry_output
from sync.cookies import ENTITY_RANKS, Cookie, Cursor, cookie_parse
from tenancy.representation import property_output

RESET_CURSOR = Cursor(version=-1)
DEFAULT_EPOCH = "1"  # what org_changes holds for an org before its first write
_ENTITY_OF_RANK = {rank: entity for entity, rank in ENTITY_RANKS.items()}

_COLUMNS = (
    "version, rank, id, op, org_id, property_id, amount, currency, category, description, "
    "occurred_on, created_by_id, created_at, updated_at, name, timezone"
)
_PROPERTY_ROWS = (
    "SELECT version, 0 AS rank, id, 'put' AS op, org_id, NULL::uuid AS property_id, NULL::numeric AS amount, "
    "currency, NULL::text AS category, NULL::text AS description, NULL::date AS occurred_on, "
    "NULL::uuid AS created_by_id, created_at, NULL::timestamptz AS updated_at, name, timezone "
    "FROM tenancy_property WHERE org_id = %(org)s AND {condition} ORDER BY version, id LIMIT %(rows)s"
)
_ENTRY_ROWS = (
    "SELECT version, {rank}, id, 'put', org_id, property_id, amount, currency, category, description, "
    "occurred_on, created_by_id, created_at, updated_at, NULL, NULL "
    "FROM {table} WHERE org_id = %(org)s AND {condition} ORDER BY version, id LIMIT %(rows)s"
)
_TOMBSTONE_ROWS = (
    "SELECT version, rank, entity_id, 'del', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
    "FROM (SELECT version, CASE entity WHEN 'property' THEN 0 WHEN 'expense' THEN 1 ELSE 2 END AS rank, entity_id "
    "      FROM changelog_tombstone WHERE org_id = %(org)s AND version >= %(version)s) AS t "
    "WHERE (version, rank, entity_id) > (%(version)s, %(rank)s, %(id)s) ORDER BY version, rank, entity_id "
    "LIMIT %(rows)s"
)
_PULL = """
WITH head AS (
    SELECT version, epoch, pruned_through FROM org_changes WHERE org_id = %(org)s
), client AS (
    SELECT user_id, last_mutation_id FROM sync_client WHERE org_id = %(org)s AND client_id = %(client)s
), page AS (
    {page} ORDER BY version, rank, id LIMIT %(rows)s
)
SELECT head.version, head.epoch, head.pruned_through, client.user_id, client.last_mutation_id, page.*
FROM (SELECT 1) AS one LEFT JOIN head ON true LEFT JOIN client ON true LEFT JOIN page ON true
ORDER BY page.version, page.rank, page.id
"""


def _condition(cursor: Cursor, rank: int) -> str:
    """The rows of the entity with `rank` whose key is above the cursor."""
    if cursor.at_boundary or rank < (cursor.rank or 0):
        return "version > %(version)s"
    if rank > (cursor.rank or 0):
        return "version >= %(version)s"
    return "(version, id) > (%(version)s, %(id)s)"


def _statement(cursor: Cursor, *, with_tombstones: bool) -> str:
    parts = [
        _PROPERTY_ROWS.format(condition=_condition(cursor, ENTITY_RANKS["property"])),
        _ENTRY_ROWS.format(
            rank=ENTITY_RANKS["expense"], table="finance_expense", condition=_condition(cursor, 1)
        ),
        _ENTRY_ROWS.format(
            rank=ENTITY_RANKS["revenue"], table="finance_revenue", condition=_condition(cursor, 2)
        ),
    ]
    if with_tombstones:
        parts.append(_TOMBSTONE_ROWS)
    return _PULL.format(page=" UNION ALL ".join(f"({part})" for part in parts))


@dataclass(frozen=True)
class OrgHead:
    version: int
    epoch: str
    pruned_through: int


@dataclass(frozen=True)
class PullPage:
    cookie: str
    reset: bool
    changes: list[dict[str, Any]]
    has_more: bool
    last_mutation_id: int
    client_user_id: uuid.UUID | None  # who owns the client id (None: never pushed)
    head: OrgHead  # the snapshot's counter


@dataclass(frozen=True)
class _Snapshot:
    head: OrgHead
    client_user_id: uuid.UUID | None
    last_mutation_id: int
    rows: list[tuple]


_FIELDS = _COLUMNS.split(", ")


def _read(
    *, database: str, org_id: uuid.UUID, client_id: uuid.UUID | None, cursor: Cursor, limit: int
) -> tuple[_Snapshot, str]:
    """The snapshot, and the alias that really answered (a replica may fail over)."""
    params = {
        "org": org_id,
        "client": client_id,
        "rows": limit + 1,
        "version": cursor.version,
        "rank": cursor.rank if cursor.rank is not None else max(ENTITY_RANKS.values()),
        "id": cursor.id or uuid.UUID(int=2**128 - 1),
    }
    sql = _statement(cursor, with_tombstones=cursor is not RESET_CURSOR)
    with connections[database].cursor() as db_cursor:
        db_cursor.execute(sql, params)
        rows = db_cursor.fetchall()
        answered = db_cursor.db.alias
    version, epoch, pruned, client_user, last_mutation = rows[0][:5]
    head = OrgHead(
        version=0 if version is None else int(version),
        epoch=DEFAULT_EPOCH if epoch is None else epoch,
        pruned_through=0 if pruned is None else int(pruned),
    )
    changes = [row[5:] for row in rows if row[5] is not None]
    return _Snapshot(head, client_user, int(last_mutation or 0), changes), answered


def _render(row: tuple) -> dict[str, Any]:
    values = SimpleNamespace(**dict(zip(_FIELDS, row, strict=True)))
    entity = _ENTITY_OF_RANK[values.rank]
    if values.op == "del":
        return {"op": "del", "entity": entity, "id": str(values.id)}
    value = property_output(values) if entity == "property" else entry_output(values)  # type: ignore[arg-type]
    return {"op": "put", "entity": entity, "id": str(values.id), "value": value}


def _cookie_usable(cookie: Cookie | None, head: OrgHead) -> bool:
    """A cookie of this history, not ahead of it, not older than its tombstone horizon."""
    return (
        cookie is not None
        and cookie.epoch == head.epoch
        and head.pruned_through <= cookie.cursor.version <= head.version
    )


def _page(snapshot: _Snapshot, *, limit: int) -> tuple[list[tuple], Cursor, bool]:
    rows = snapshot.rows
    if len(rows) <= limit:
        return rows, Cursor(version=snapshot.head.version), False
    page = rows[:limit]
    last = page[-1]
    if rows[limit][0] != last[0]:
        return page, Cursor(version=last[0]), True
    start = next(i for i, row in enumerate(page) if row[0] == last[0])
    if start > 0:  # end on the last whole version
        page = page[:start]
        return page, Cursor(version=page[-1][0]), True
    return page, Cursor(version=last[0], rank=last[1], id=last[2]), True  # one version larger than a page


def sync_pull(
    *,
    database: str,
    org_id: uuid.UUID,
    client_id: uuid.UUID | None,
    cookie: str | None,
    limit: int,
    primary: str,
) -> PullPage | None:
    """One page of the org's changes after `cookie` (or the whole state: reset).

    `database` is where to read (a replica or `primary`, the org's primary). Read on a
    replica, answers None when it cannot vouch for the cookie
    (it has not replayed the cookie's version, or shows another epoch): ask the primary.
    """
    parsed = cookie_parse(cookie) if cookie is not None else None
    cursor = parsed.cursor if parsed is not None else RESET_CURSOR
    snapshot, answered = _read(
        database=database, org_id=org_id, client_id=client_id, cursor=cursor, limit=limit
    )
    authoritative = answered == primary
    reset = parsed is None
    if parsed is not None and not _cookie_usable(parsed, snapshot.head):
        if not authoritative and (
            parsed.epoch != snapshot.head.epoch or parsed.cursor.version > snapshot.head.version
        ):
            return None  # this replica may just be behind: the primary decides
        reset = True
        snapshot, _ = _read(
            database=database, org_id=org_id, client_id=client_id, cursor=RESET_CURSOR, limit=limit
        )
    rows, next_cursor, has_more = _page(snapshot, limit=limit)
    return PullPage(
        cookie=Cookie(epoch=snapshot.head.epoch, cursor=next_cursor).encode(),
        reset=reset,
        changes=[_render(row) for row in rows],
        has_more=has_more,
        last_mutation_id=snapshot.last_mutation_id,
        client_user_id=snapshot.client_user_id,
        head=snapshot.head,
    )
