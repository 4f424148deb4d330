"""Moving an org to another cluster while the service runs (CONTRACT §13).

    1. MOVING   copy every row of the org from a snapshot of the source (COPY, table
                by table), remembering the org's version V0 and the snapshot's time
    2.          catch up, in rounds: rows with a version above the last one applied
                (upserted), tombstones above it (deleted, and copied), the per-day
                totals of the keys those changes touched, and the tables kept by time
                or state (sync clients, idempotency records, push deliveries) since
                the previous snapshot; until the source stands still or a few rounds
                have passed. The last round verifies everything (row counts, the
                per-day totals on both sides and against the target's rows) in its
                snapshot, outside the fence
    3. FENCED   writes of the org wait (at most ORG_MOVE_FENCE_SECONDS) or get 503;
                take the org's counter lock on the source (in-flight writes finish,
                new ones queue behind it), apply only what changed since the last
                round, copy the org row, memberships and notification preferences
                again (bounded by the org's people), give the target's counter the
                source's version under a new epoch (pre-move sync cookies reset)
    4. verify   what changed since the full check: the changed rows, the totals keys
                they touched, the counts of the unversioned tables
    5. flip     commit the target; mark the source's counter `moved` and commit (writes
                queued on its lock, or routed there by a stale cache, are refused:
                503); then the directory names the target, ACTIVE
    6. clean    after the directory cache's staleness bound, delete the source's copy
                (its counter row stays, marked moved)

Anything that fails before the flip leaves the org where it was (ACTIVE on the
source) and the target's partial copy is deleted. A mover killed at any step leaves a
state the next run of the same command recognises and finishes (OrgMove).
The outbox is not moved: it is a per-cluster queue, drained by the source's worker.
"""

import os
import secrets
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.conf import settings
from django.db import connections
from psycopg import sql

from directory.exceptions import MOVED_EPOCH
from directory.models import PlacementState
from directory.selectors import placement_get
from directory.services import placement_change
from replicas.topology import Cluster, topology

ORG = "tenancy_organization"
# Versioned entities: (table, entity name in tombstones, conflict key), in FK order.
VERSIONED = (
    ("tenancy_property", "property", ("id",)),
    ("finance_expense", "expense", ("org_id", "id")),
    ("finance_revenue", "revenue", ("org_id", "id")),
)
# Not versioned: copied with the snapshot, then brought up to date by what changed
# (each catch-up round, and under the fence): the per-day totals by the keys the
# applied changes touched, tombstones by version, the others by time or state
# (_refresh_recent). Memberships and notification preferences (one row per member,
# bounded by the org's people, not its rows) are copied whole again under the fence.
WHOLE = ("tenancy_membership", "push_notification_preference")
UNVERSIONED = (
    *WHOLE,
    "finance_daily_total",
    "sync_client",
    "idempotency_record",
    "changelog_tombstone",
    "push_delivery",
)
SERIAL_ID_TABLES = frozenset({"sync_client", "changelog_tombstone"})
# How far before a round's snapshot a row's own timestamp may be and still belong to a
# write that committed after it (a transaction's time is its start; app clocks drift).
RECENT_MARGIN_SECONDS = 120
# A test hook: the mover kills itself (SIGKILL) at this step (tests/test_org_move_crash.py).
KILL_AT_ENV = "ORG_MOVE_TEST_KILL_AT"
EVERY_ROW = sql.SQL("true")
CATCH_UP_ROUNDS = 5


class MoveError(Exception):
    """The move stopped; the org stays where it was."""


@dataclass
class MoveReport:
    org_id: uuid.UUID
    source: str
    target: str
    rows_copied: dict[str, int] = field(default_factory=dict)
    changes_applied: int = 0
    version: int = 0
    epoch: str = ""
    copy_seconds: float = 0.0
    fence_seconds: float = 0.0


def _conninfo(alias: str) -> str:
    p = connections.settings[alias]
    return psycopg.conninfo.make_conninfo(
        host=p["HOST"], port=p["PORT"], user=p["USER"], password=p.get("PASSWORD") or None, dbname=p["NAME"]
    )


def _one(conn: psycopg.Connection, query: Any, params: Any = None) -> tuple[Any, ...]:
    """The one row a query always answers (a count, an aggregate, a row the move holds)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise MoveError(f"no row for {query!r}")
    return row


_COLUMNS: dict[str, list[str]] = {}


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    """The table's columns (every cluster has the same schema: cached per process)."""
    if table not in _COLUMNS:
        _COLUMNS[table] = _read_columns(conn, table)
    return _COLUMNS[table]


def _read_columns(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s"
        " ORDER BY ordinal_position",
        [table],
    ).fetchall()
    columns = [r[0] for r in rows]
    return [c for c in columns if not (table in SERIAL_ID_TABLES and c == "id")]


def _copy_table(
    source: psycopg.Connection,
    target: psycopg.Connection,
    table: str,
    org_id: uuid.UUID,
    *,
    where: str = "org_id",
    condition: sql.Composable = EVERY_ROW,
) -> int:
    """COPY the org's rows of `table` (those meeting `condition`) from the source's
    transaction into the target's; returns how many."""
    columns = sql.SQL(", ").join(map(sql.Identifier, _columns(source, table)))
    out = sql.SQL("COPY (SELECT {} FROM {} WHERE {} = {} AND ({})) TO STDOUT (FORMAT BINARY)").format(
        columns, sql.Identifier(table), sql.Identifier(where), sql.Literal(str(org_id)), condition
    )
    into = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table), columns)
    with source.cursor().copy(out) as reader, target.cursor().copy(into) as writer:
        for block in reader:
            writer.write(block)
    return _one(
        target,
        sql.SQL("SELECT count(*) FROM {} WHERE {} = %s AND ({})").format(
            sql.Identifier(table), sql.Identifier(where), condition
        ),
        [org_id],
    )[0]


def _delete_org(conn: psycopg.Connection, org_id: uuid.UUID, *, keep_counter: bool = False) -> None:
    """Every row of the org in this database (children first)."""
    tables = [*UNVERSIONED, *(t for t, _, _ in reversed(VERSIONED))]
    for table in tables:
        conn.execute(sql.SQL("DELETE FROM {} WHERE org_id = %s").format(sql.Identifier(table)), [org_id])
    conn.execute(f"DELETE FROM {ORG} WHERE id = %s", [org_id])
    if not keep_counter:
        conn.execute("DELETE FROM org_changes WHERE org_id = %s", [org_id])


TotalsKey = tuple[object, object, str, str]  # (day, property, currency, kind)
_ENTRY_KEYS = {"finance_expense": "expense", "finance_revenue": "revenue"}


def _entry_keys(conn: psycopg.Connection, table: str, org_id: uuid.UUID, ids: list) -> set[TotalsKey]:
    """The per-day totals keys of these entries as `conn` has them."""
    if not ids:
        return set()
    rows = conn.execute(
        sql.SQL(
            "SELECT occurred_on, property_id, currency FROM {} WHERE org_id = %s AND id = ANY(%s)"
        ).format(sql.Identifier(table)),
        [org_id, ids],
    ).fetchall()
    return {(day, prop, currency, _ENTRY_KEYS[table]) for day, prop, currency in rows}


def _keys_params(org_id: uuid.UUID, keys: set[TotalsKey]) -> list:
    ordered = sorted(keys, key=str)
    return [org_id, *([k[i] for k in ordered] for i in range(4))]


_KEYS_JOIN = (
    " USING unnest(%s::date[], %s::uuid[], %s::text[], %s::text[]) AS k(day, property_id, currency, kind)"
    " WHERE t.org_id = %s AND t.day = k.day AND t.property_id = k.property_id AND t.currency = k.currency"
    " AND t.kind = k.kind"
)


def _totals_refresh(
    source: psycopg.Connection, target: psycopg.Connection, org_id: uuid.UUID, keys: set[TotalsKey]
) -> None:
    """The target's per-day totals of these keys, as the source has them."""
    if not keys:
        return
    params = _keys_params(org_id, keys)
    params = [*params[1:], org_id]
    target.execute("DELETE FROM finance_daily_total t" + _KEYS_JOIN, params)
    columns = _columns(source, "finance_daily_total")
    rows = source.execute(
        sql.SQL("SELECT {} FROM finance_daily_total t, unnest(%s::date[], %s::uuid[], %s::text[], %s::text[])"
                " AS k(day, property_id, currency, kind) WHERE t.org_id = %s AND t.day = k.day"
                " AND t.property_id = k.property_id AND t.currency = k.currency AND t.kind = k.kind").format(
            sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns)
        ),
        params,
    ).fetchall()  # fmt: skip
    if rows:
        target.cursor().executemany(
            sql.SQL("INSERT INTO finance_daily_total ({}) VALUES ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(sql.Placeholder() * len(columns))
            ),
            rows,
        )  # fmt: skip


def _upsert(
    target: psycopg.Connection, table: str, columns: list[str], key: tuple[str, ...], rows: list
) -> None:
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        sql.SQL(", ").join(map(sql.Identifier, key)),
        sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in columns if c not in key
        ),
    )  # fmt: skip
    target.cursor().executemany(statement, rows)


@dataclass
class Applied:
    """What one catch-up step changed on the target."""

    rows: int = 0
    keys: set[TotalsKey] = field(default_factory=set)  # per-day totals keys refreshed
    ids: dict[str, list] = field(default_factory=dict)  # versioned table -> ids upserted or deleted


def _apply_changes(
    source: psycopg.Connection, target: psycopg.Connection, org_id: uuid.UUID, after: int, upto: int
) -> Applied:
    """Bring the target from version `after` to `upto`: rows changed in between are
    upserted, entities deleted in between are deleted, tombstones recorded in between
    copied, and the per-day totals of every key those changes touched (the entries'
    keys before, as the target has them, and after) copied again.
    """
    applied = Applied()
    deleted = source.execute(
        "SELECT entity, entity_id FROM changelog_tombstone WHERE org_id = %s AND version > %s AND version <= %s",
        [org_id, after, upto],
    ).fetchall()
    for table, entity, key in VERSIONED:
        columns = _columns(source, table)
        rows = source.execute(
            sql.SQL("SELECT {} FROM {} WHERE org_id = %s AND version > %s AND version <= %s").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
            ),
            [org_id, after, upto],
        ).fetchall()
        ids = [row[columns.index("id")] for row in rows] + [i for kind, i in deleted if kind == entity]
        applied.ids[table] = ids
        if table in _ENTRY_KEYS:
            applied.keys |= _entry_keys(target, table, org_id, ids) | _entry_keys(source, table, org_id, ids)
        if rows:
            _upsert(target, table, columns, key, rows)
            applied.rows += len(rows)
    by_entity = {entity: table for table, entity, _ in VERSIONED}
    for entity in ("expense", "revenue", "property"):  # children before their property
        ids = [entity_id for kind, entity_id in deleted if kind == entity]
        if ids:
            target.execute(
                sql.SQL("DELETE FROM {} WHERE org_id = %s AND id = ANY(%s)").format(
                    sql.Identifier(by_entity[entity])
                ),
                [org_id, ids],
            )
            applied.rows += len(ids)
    columns = _columns(source, "changelog_tombstone")
    tombstones = source.execute(
        sql.SQL("SELECT {} FROM changelog_tombstone WHERE org_id = %s AND version > %s AND version <= %s").format(
            sql.SQL(", ").join(map(sql.Identifier, columns))
        ),
        [org_id, after, upto],
    ).fetchall()  # fmt: skip
    if tombstones:
        _upsert(target, "changelog_tombstone", columns, ("org_id", "entity_id"), tombstones)
    _totals_refresh(source, target, org_id, applied.keys)
    return applied


def _drop_gone(
    source: psycopg.Connection,
    target: psycopg.Connection,
    org_id: uuid.UUID,
    *,
    table: str,
    key: str,
    condition: str,
) -> int:
    """Delete the target's rows meeting `condition` that the source no longer has
    (expired or pruned there since the copy). `condition` selects few rows: those
    near their expiry."""
    query = f"SELECT {key} FROM {table} WHERE org_id = %s AND ({condition})"
    theirs = {row[0] for row in source.execute(query, [org_id]).fetchall()}
    gone = [row[0] for row in target.execute(query, [org_id]).fetchall() if row[0] not in theirs]
    if gone:
        target.execute(f"DELETE FROM {table} WHERE org_id = %s AND {key} = ANY(%s)", [org_id, gone])
    return len(gone)


def _refresh_recent(
    source: psycopg.Connection, target: psycopg.Connection, org_id: uuid.UUID, since: float, pruned: int
) -> int:
    """Bring the unversioned tables kept by time or state up to the source's snapshot
    (`since`: epoch seconds of the previous snapshot this copy was made from): rows
    written or changed since (less RECENT_MARGIN_SECONDS) are copied again, rows the
    source expired or pruned since are deleted. Returns the rows copied."""
    recent = sql.Literal(since - RECENT_MARGIN_SECONDS)
    copied = 0
    # sync clients: updated in place (their last mutation id)
    changed = sql.SQL("updated_at >= to_timestamp({})").format(recent)
    target.execute(sql.SQL("DELETE FROM sync_client WHERE org_id = %s AND ({})").format(changed), [org_id])
    copied += _copy_table(source, target, "sync_client", org_id, condition=changed)
    # idempotency records: written once, in their write's transaction; deleted when expired
    written = sql.SQL("created_at >= to_timestamp({})").format(recent)
    target.execute(
        sql.SQL("DELETE FROM idempotency_record WHERE org_id = %s AND ({})").format(written), [org_id]
    )
    copied += _copy_table(source, target, "idempotency_record", org_id, condition=written)
    near_expiry = f"expires_at < now() + interval '{RECENT_MARGIN_SECONDS} seconds'"
    _drop_gone(
        source,
        target,
        org_id,
        table="idempotency_record",
        key="key_hash || user_id::text::bytea",
        condition=near_expiry,
    )
    # tombstones pruned on the source (the versions it pruned through)
    target.execute("DELETE FROM changelog_tombstone WHERE org_id = %s AND version <= %s", [org_id, pruned])
    # deliveries: a row changes while pending or sending, is final after; pruned when old
    live = [
        row[0]
        for row in target.execute(
            "SELECT id FROM push_delivery WHERE org_id = %s AND status IN ('pending', 'sending')", [org_id]
        ).fetchall()
    ]
    changing = sql.SQL("id = ANY({}::uuid[]) OR created_at >= to_timestamp({})").format(
        sql.Literal([str(i) for i in live]), recent
    )
    target.execute(sql.SQL("DELETE FROM push_delivery WHERE org_id = %s AND ({})").format(changing), [org_id])
    copied += _copy_table(source, target, "push_delivery", org_id, condition=changing)
    days = settings.PUSH_DELIVERY_RETENTION_DAYS
    near_pruning = f"created_at < now() - interval '{days} days' + interval '{RECENT_MARGIN_SECONDS} seconds'"
    _drop_gone(source, target, org_id, table="push_delivery", key="id", condition=near_pruning)
    return copied


def _version(conn: psycopg.Connection, org_id: uuid.UUID, *, lock: bool = False) -> tuple[int, str, int]:
    """(version, epoch, pruned_through) of the org's counter (a new row if it had none)."""
    conn.execute(
        "INSERT INTO org_changes (org_id, version, epoch, pruned_through) VALUES (%s, 0, '1', 0)"
        " ON CONFLICT (org_id) DO NOTHING",
        [org_id],
    )
    row = _one(
        conn,
        "SELECT version, epoch, pruned_through FROM org_changes WHERE org_id = %s"
        + (" FOR UPDATE" if lock else ""),
        [org_id],
    )
    return int(row[0]), row[1], int(row[2])


_COUNTS = {
    **{
        table: "SELECT count(*) FROM {} WHERE org_id = %s"
        for table in (*UNVERSIONED, *(t for t, _, _ in VERSIONED))
    },
    ORG: "SELECT count(*) FROM {} WHERE id = %s",
}
# The per-day totals as the rows say they should be (finance/totals.py keeps them so),
# for every key (`true`) or the keys given.
_TOTALS_FROM_ROWS = """
SELECT day, property_id, currency, kind, sum(amount), count(*) FROM (
    SELECT occurred_on AS day, property_id, currency, 'expense' AS kind, amount FROM finance_expense
    WHERE org_id = %(org)s AND {expense}
    UNION ALL
    SELECT occurred_on, property_id, currency, 'revenue', amount FROM finance_revenue
    WHERE org_id = %(org)s AND {revenue}
) rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
_TOTALS = (
    "SELECT day, property_id, currency, kind, total, count FROM finance_daily_total"
    " WHERE org_id = %(org)s AND count > 0 AND {totals} ORDER BY 1, 2, 3, 4"
)


def _totals_pair(
    conn: psycopg.Connection, org_id: uuid.UUID, keys: set[TotalsKey] | None, *, rows: bool = True
) -> tuple[list, list]:
    """(the totals table, the totals recomputed from the rows unless not `rows`) on one
    side, for every key or only `keys`."""
    params: dict[str, object] = {"org": org_id}
    if keys is None:
        expense = revenue = totals = "true"
    else:
        for i, name in enumerate(("days", "props", "currencies", "kinds")):
            params[name] = [k[i] for k in sorted(keys, key=str)]
        match = ("({}) IN (SELECT * FROM unnest(%(days)s::date[], %(props)s::uuid[], %(currencies)s::text[],"
                 " %(kinds)s::text[]))")  # fmt: skip
        expense = match.format("occurred_on, property_id, currency, 'expense'")
        revenue = match.format("occurred_on, property_id, currency, 'revenue'")
        totals = match.format("day, property_id, currency, kind")
    table = conn.execute(_TOTALS.format(totals=totals), params).fetchall()
    if not rows:
        return table, []
    from_rows = conn.execute(_TOTALS_FROM_ROWS.format(expense=expense, revenue=revenue), params).fetchall()
    return table, from_rows


def _differing(first: list, second: list, what: str) -> list[str]:
    if first == second:
        return []
    differing = set(first) ^ set(second)
    return [f"{what} differ on {len(differing)} keys, e.g. {sorted(differing, key=str)[:3]}"]


def _counts(
    source: psycopg.Connection, target: psycopg.Connection, org_id: uuid.UUID, tables: list[str]
) -> list[str]:
    problems = []
    for table in tables:
        statement = sql.SQL(_COUNTS[table]).format(sql.Identifier(table))
        theirs, ours = (_one(c, statement, [org_id])[0] for c in (source, target))
        if theirs != ours:
            problems.append(f"{table}: {theirs} rows on the source, {ours} on the target")
    return problems


def _totals_tables(
    source: psycopg.Connection, target: psycopg.Connection, org_id: uuid.UUID, keys: set[TotalsKey] | None
) -> list[str]:
    """The per-day totals tables equal on both sides (every key, or the keys given),
    and the target's equal its own rows."""
    source_table, _ = _totals_pair(source, org_id, keys, rows=False)
    target_table, target_rows = _totals_pair(target, org_id, keys)
    return _differing(source_table, target_table, "per-day totals") + _differing(
        target_table, target_rows, "the target's per-day totals and its rows"
    )


def _verify_full(source: psycopg.Connection, target: psycopg.Connection, org_id: uuid.UUID) -> list[str]:
    """Outside the fence, the source in a snapshot at the version the target was just
    committed at: row counts of every table, the per-day totals tables key by key, and
    the target's totals recomputed from its rows (the read model is the checksum: it
    was kept in each write's transaction on the source). Empty: the copies agree."""
    return _counts(source, target, org_id, list(_COUNTS)) + _totals_tables(source, target, org_id, None)


def _verify_fence(
    source: psycopg.Connection, target: psycopg.Connection, org_id: uuid.UUID, applied: Applied
) -> list[str]:
    """Under the fence, only what changed since `_verify_full`: the versioned rows
    upserted or deleted since exist on both sides alike, the totals keys they touched
    agree (source, target, target's rows), and the unversioned tables other than the
    totals have equal counts. Rows and keys untouched since are unchanged on both sides,
    so with the full check this covers the whole org."""
    problems = []
    for table, ids in applied.ids.items():
        if ids:
            statement = sql.SQL("SELECT count(*) FROM {} WHERE org_id = %s AND id = ANY(%s)").format(
                sql.Identifier(table)
            )
            theirs, ours = (_one(c, statement, [org_id, ids])[0] for c in (source, target))
            if theirs != ours:
                problems.append(f"{table}: {theirs} of the changed rows on the source, {ours} on the target")
    unversioned = [t for t in UNVERSIONED if t != "finance_daily_total"]
    problems += _counts(source, target, org_id, [ORG, *unversioned])
    if applied.keys:
        problems += _totals_tables(source, target, org_id, applied.keys)
    return problems


def _activate(target: psycopg.Connection, org_id: uuid.UUID) -> str:
    """The target's copy takes writes from now on, under a new epoch (pre-move sync
    cookies get a reset); returns the epoch. Committed at once."""
    epoch = secrets.token_hex(8)
    target.execute("UPDATE org_changes SET epoch = %s WHERE org_id = %s", [epoch, org_id])
    target.commit()
    return epoch


def _kill_point(step: str) -> None:
    """Test hook: die here, as a crash would (no cleanup, no rollback sent)."""
    if os.environ.get(KILL_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _counter_epoch(conninfo: str, org_id: uuid.UUID) -> str | None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT epoch FROM org_changes WHERE org_id = %s", [org_id]).fetchone()
    return None if row is None else row[0]


def _has_org(conninfo: str, org_id: uuid.UUID) -> bool:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute(f"SELECT 1 FROM {ORG} WHERE id = %s", [org_id]).fetchone() is not None


class OrgMove:
    """One move. A rerun after the mover died finds where the last one stopped:

    - the directory names the source and the source's counter is not `moved`: the
      flip did not happen; start over (the target's partial copy is deleted first);
    - the directory names the source and the source's counter says `moved`: the
      mover died between committing the target and the directory's flip (the
      target's copy is complete and verified, the source refuses writes): finish the
      flip;
    - the directory names the target and a copy is left on another cluster: finish
      the cleaning.
    """

    def __init__(
        self, *, org_id: uuid.UUID, target: str, progress: Callable[[str], None], clean_source: bool = True
    ) -> None:
        self.org_id = org_id
        self.progress = progress
        self.clean_source = clean_source
        placement = placement_get(org_id=org_id, fresh=True)
        if placement is None:
            raise MoveError(f"org {org_id} is not in the org directory")
        self.source: Cluster = topology().named(placement.cluster)
        self.target: Cluster = topology().named(target)
        self.report = MoveReport(org_id=org_id, source=self.source.name, target=self.target.name)
        self.leftovers: list[Cluster] = []
        self.reactivate = False
        if self.source == self.target:
            # Rerun towards where the directory says the org is: what an earlier move
            # left elsewhere is deleted; a source it marked `moved` takes writes again.
            self.leftovers = [
                cluster
                for cluster in topology().clusters.values()
                if cluster != self.target and _has_org(_conninfo(cluster.primary), org_id)
            ]
            self.reactivate = _counter_epoch(_conninfo(self.source.primary), org_id) == MOVED_EPOCH
            if not (self.leftovers or self.reactivate):
                raise MoveError(f"org {org_id} is already on {target}")

    def run(self) -> MoveReport:
        with psycopg.connect(_conninfo(topology().home.primary), autocommit=True) as directory:
            # One mover per org: held until this process ends (a killed mover's goes
            # with its connection), so a rerun never races a mover still running.
            lock = "SELECT pg_try_advisory_lock(hashtextextended('org-move:' || %s, 0))"
            if not _one(directory, lock, [str(self.org_id)])[0]:
                raise MoveError(f"another org_move of org {self.org_id} is running")
            if self.leftovers or self.reactivate:
                self._settle()
                return self.report
            if _counter_epoch(_conninfo(self.source.primary), self.org_id) == MOVED_EPOCH:
                self._finish_flip()
            else:
                self._move()
            if self.clean_source:
                self._clean(self.source, wait=True)
        return self.report

    def _settle(self) -> None:
        """The org is where the directory says: delete what an earlier, killed move
        left on other clusters (a copy not cleaned after its flip, or a target it never
        flipped to), then, if that move had marked this cluster `moved` before dying,
        let it take writes again (under a new epoch)."""
        self.progress(f"the org is on {self.target.name}: finishing what an earlier move left")
        for cluster in self.leftovers:
            self._clean(cluster, wait=False)
        if self.reactivate:
            with psycopg.connect(_conninfo(self.target.primary)) as target:
                epoch = _activate(target, self.org_id)
            placement_change(org_id=self.org_id, state=PlacementState.ACTIVE)
            self.progress(f"the copy on {self.target.name} takes writes again (epoch {epoch})")

    def _move(self) -> None:
        placement_change(org_id=self.org_id, state=PlacementState.MOVING)
        try:
            with (
                psycopg.connect(_conninfo(self.source.primary)) as source,
                psycopg.connect(_conninfo(self.target.primary)) as target,
            ):
                applied, since = self._copy(source, target)
                applied, since = self._catch_up(source, target, applied, since)
                self._switch(source, target, applied, since)
        except BaseException:
            self._abort()
            raise

    def _finish_flip(self) -> None:
        """The source refuses writes (`moved`) and the directory still names it: the
        previous mover committed the target and died before the flip. The target's copy
        is the org if it is at the source's last version (a copy left by an older move
        would be behind it)."""
        with (
            psycopg.connect(_conninfo(self.source.primary), autocommit=True) as source,
            psycopg.connect(_conninfo(self.target.primary), autocommit=True) as target,
        ):
            final = _one(source, "SELECT version FROM org_changes WHERE org_id = %s", [self.org_id])
            copied = target.execute(
                "SELECT c.version FROM org_changes c JOIN tenancy_organization o ON o.id = c.org_id"
                " WHERE c.org_id = %s",
                [self.org_id],
            ).fetchone()
            if copied is None or copied[0] != final[0]:
                raise MoveError(
                    f"the copy on {self.source.name} is marked moved but {self.target.name} has no copy of the org"
                    f" at its version {final[0]}: rerun with --to naming the cluster the earlier move went to"
                )
            epoch = _activate(target, self.org_id)
        placement_change(org_id=self.org_id, state=PlacementState.ACTIVE, cluster=self.target.name)
        self.report.epoch = epoch
        self.progress(f"finished an earlier move's flip: the org is on {self.target.name} (epoch {epoch})")

    def _copy(self, source: psycopg.Connection, target: psycopg.Connection) -> tuple[int, float]:
        started = time.monotonic()
        source.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        version, since, _ = self._snapshot(source)
        _delete_org(target, self.org_id)  # what an earlier, interrupted move left
        for table in (ORG, *(t for t, _, _ in VERSIONED), *UNVERSIONED):
            count = _copy_table(source, target, table, self.org_id, where="id" if table == ORG else "org_id")
            self.report.rows_copied[table] = count
            self.progress(f"copied {table}: {count} rows")
            _kill_point("copy")
        source.rollback()
        target.commit()
        self.report.copy_seconds = time.monotonic() - started
        self.progress(f"copy done at version {version} in {self.report.copy_seconds:.2f}s")
        return version, since

    def _snapshot(self, source: psycopg.Connection) -> tuple[int, float, int]:
        """(the org's version, the snapshot's time, the version its tombstones are
        pruned through) in the source's current snapshot."""
        row = _one(
            source,
            "SELECT c.version, extract(epoch FROM now()), c.pruned_through"
            " FROM (SELECT 1) one LEFT JOIN org_changes c ON c.org_id = %s",
            [self.org_id],
        )
        return (0 if row[0] is None else int(row[0])), float(row[1]), int(row[2] or 0)

    def _catch_up(
        self, source: psycopg.Connection, target: psycopg.Connection, applied: int, since: float
    ) -> tuple[int, float]:
        """Rounds until the source stands still (or CATCH_UP_ROUNDS); the last one also
        runs the full verification, in its snapshot, outside the fence."""
        for round_ in range(1, CATCH_UP_ROUNDS + 1):
            source.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            now, taken, pruned = self._snapshot(source)
            step = _apply_changes(source, target, self.org_id, applied, now)
            recent = _refresh_recent(source, target, self.org_id, since, pruned)
            target.commit()
            self.report.changes_applied += step.rows
            self.progress(
                f"catch-up round {round_}: versions {applied + 1}..{now}, {step.rows} rows, {recent} recent"
            )
            last = now == applied or round_ == CATCH_UP_ROUNDS
            applied, since = now, taken
            if last:
                problems = _verify_full(source, target, self.org_id)
                source.rollback()
                if problems:
                    raise MoveError("verification failed: " + "; ".join(problems))
                self.progress(f"verified at version {now}: row counts and per-day totals agree")
                break
            source.rollback()
        return applied, since

    def _switch(
        self, source: psycopg.Connection, target: psycopg.Connection, applied: int, since: float
    ) -> None:
        budget = settings.ORG_MOVE_FENCE_SECONDS
        fenced_at = time.monotonic()
        placement_change(org_id=self.org_id, state=PlacementState.FENCED)
        self.progress(f"fenced: writes wait (at most {budget:g}s) or get 503")
        source.execute("SELECT set_config('lock_timeout', %s, false)", [f"{int(budget * 1000)}ms"])
        version, _, pruned = _version(source, self.org_id, lock=True)  # in-flight writes done, new ones wait
        _kill_point("fence")
        step = _apply_changes(source, target, self.org_id, applied, version)
        self.report.changes_applied += step.rows
        target.execute("SET CONSTRAINTS ALL DEFERRED")
        target.execute(f"DELETE FROM {ORG} WHERE id = %s", [self.org_id])
        _copy_table(source, target, ORG, self.org_id, where="id")
        for table in WHOLE:
            target.execute(
                sql.SQL("DELETE FROM {} WHERE org_id = %s").format(sql.Identifier(table)), [self.org_id]
            )
            _copy_table(source, target, table, self.org_id)
        _refresh_recent(source, target, self.org_id, since, pruned)
        # The target's counter is committed as `moved` (refusing writes, its deliveries
        # unclaimed) and made live only once the source is marked moved: never may both
        # copies take writes or send the org's notifications.
        target.execute(
            "INSERT INTO org_changes (org_id, version, epoch, pruned_through) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (org_id) DO UPDATE SET version = EXCLUDED.version, epoch = EXCLUDED.epoch,"
            " pruned_through = EXCLUDED.pruned_through",
            [self.org_id, version, MOVED_EPOCH, pruned],
        )
        problems = _verify_fence(source, target, self.org_id, step)
        if problems:
            raise MoveError("verification failed: " + "; ".join(problems))
        if time.monotonic() - fenced_at > budget:
            raise MoveError(f"the switch took longer than ORG_MOVE_FENCE_SECONDS ({budget:g}s)")
        self.progress(f"verified the changes up to version {version}")
        target.commit()
        _kill_point("committed")
        # The source refuses the org's writes from its commit on (queued writers meet
        # `moved`: 503, and route again); only then does the directory name the target.
        # A mover that dies in between leaves both states for a rerun to recognise.
        source.execute("UPDATE org_changes SET epoch = %s WHERE org_id = %s", [MOVED_EPOCH, self.org_id])
        source.commit()
        _kill_point("moved")
        epoch = _activate(target, self.org_id)
        placement_change(org_id=self.org_id, state=PlacementState.ACTIVE, cluster=self.target.name)
        self.report.fence_seconds = time.monotonic() - fenced_at
        self.report.version, self.report.epoch = version, epoch
        self.progress(
            f"flipped to {self.target.name} at version {version}, epoch {epoch}; fence {self.report.fence_seconds:.3f}s"
        )
        _kill_point("flipped")

    def _abort(self) -> None:
        """Before the flip: the org stays on the source, the target's copy goes. (Once
        the source's counter says `moved`, the target's copy is the org: kept.)"""
        placement = placement_get(org_id=self.org_id, fresh=True)
        if placement is None or placement.cluster != self.source.name:
            return
        if _counter_epoch(_conninfo(self.source.primary), self.org_id) == MOVED_EPOCH:
            self.progress("stopped after the source was marked moved: rerun to finish the flip")
            return
        placement_change(org_id=self.org_id, state=PlacementState.ACTIVE)
        with psycopg.connect(_conninfo(self.target.primary)) as target:
            _delete_org(target, self.org_id)
        self.progress("aborted: the org stays on " + self.source.name)

    def _clean(self, cluster: Cluster, *, wait: bool) -> None:
        """Once no process can route by the old placement any more, drop the old copy."""
        if wait:
            bound = settings.DIRECTORY_HEARTBEAT_SECONDS + settings.DIRECTORY_STALE_SECONDS
            self.progress(
                f"waiting {bound:g}s (the directory cache's bound) before deleting the source's copy"
            )
            time.sleep(bound)
        with psycopg.connect(_conninfo(cluster.primary)) as conn:
            _delete_org(conn, self.org_id, keep_counter=True)
            conn.execute("UPDATE org_changes SET epoch = %s WHERE org_id = %s", [MOVED_EPOCH, self.org_id])
        self.progress(f"deleted the copy on {cluster.name} (its counter stays, marked moved)")
