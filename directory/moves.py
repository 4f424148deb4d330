"""Moving an org to another cluster while the service runs (CONTRACT §13).

    1. MOVING   copy every row of the org from a snapshot of the source (COPY, table
                by table), remembering the org's version V0 in that snapshot
    2.          catch up from the change log: rows with a version above the last one
                applied (upserted), tombstones above it (deleted), until the source
                stands still or a few rounds have passed
    3. FENCED   writes of the org wait (at most ORG_MOVE_FENCE_SECONDS) or get 503;
                take the org's counter lock on the source (in-flight writes finish,
                new ones queue behind it), apply the last changes, copy the
                unversioned tables again (memberships, per-day totals, sync clients,
                idempotency records, tombstones), give the target's counter the
                source's version under a new epoch (pre-move sync cookies reset)
    4. verify   row counts of every table, and the per-day totals recomputed from the
                target's rows equal to the source's totals (the read model is the checksum)
    5. flip     commit the target; mark the source's counter `moved` (writes that were
                queued on its lock, or routed there by a stale cache, are refused:
                503); the directory names the target, ACTIVE; release the lock
    6. clean    after the directory cache's staleness bound, delete the source's copy
                (its counter row stays, marked moved)

Anything that fails before the flip leaves the org where it was (ACTIVE on the
source) and the target's partial copy is deleted; a rerun starts over.
The outbox is not moved: it is a per-cluster queue, drained by the source's worker.
Push preferences and deliveries are not moved yet (docs/clusters.md).
"""

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

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
# Not versioned: copied whole again under the fence (bigint identity ids left out).
UNVERSIONED = (
    "tenancy_membership",
    "finance_daily_total",
    "sync_client",
    "idempotency_record",
    "changelog_tombstone",
)
SERIAL_ID_TABLES = frozenset({"sync_client", "changelog_tombstone"})
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


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
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
    where: str = "org_id",
) -> int:
    """COPY the org's rows of `table` from the source's transaction into the target's."""
    columns = sql.SQL(", ").join(map(sql.Identifier, _columns(source, table)))
    out = sql.SQL("COPY (SELECT {} FROM {} WHERE {} = {}) TO STDOUT (FORMAT BINARY)").format(
        columns, sql.Identifier(table), sql.Identifier(where), sql.Literal(str(org_id))
    )
    into = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table), columns)
    with source.cursor().copy(out) as reader, target.cursor().copy(into) as writer:
        for block in reader:
            writer.write(block)
    return target.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(sql.Identifier(table), sql.Identifier(where)),
        [org_id],
    ).fetchone()[0]  # type: ignore[index]  # count(*) answers one row


def _delete_org(conn: psycopg.Connection, org_id: uuid.UUID, *, keep_counter: bool = False) -> None:
    """Every row of the org in this database (children first)."""
    tables = [*UNVERSIONED, *(t for t, _, _ in reversed(VERSIONED))]
    for table in tables:
        conn.execute(sql.SQL("DELETE FROM {} WHERE org_id = %s").format(sql.Identifier(table)), [org_id])
    conn.execute("DELETE FROM push_notification_preference WHERE org_id = %s", [org_id])
    conn.execute("DELETE FROM push_delivery WHERE org_id = %s", [org_id])
    conn.execute(f"DELETE FROM {ORG} WHERE id = %s", [org_id])
    if not keep_counter:
        conn.execute("DELETE FROM org_changes WHERE org_id = %s", [org_id])


def _apply_changes(
    source: psycopg.Connection, target: psycopg.Connection, org_id: uuid.UUID, after: int, upto: int
) -> int:
    """Bring the target from version `after` to `upto`: rows changed in between are
    upserted, entities deleted in between are deleted. Returns the rows touched."""
    touched = 0
    for table, _, key in VERSIONED:
        columns = _columns(source, table)
        rows = source.execute(
            sql.SQL("SELECT {} FROM {} WHERE org_id = %s AND version > %s AND version <= %s").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
            ),
            [org_id, after, upto],
        ).fetchall()
        if rows:
            upsert = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                sql.SQL(", ").join(map(sql.Identifier, key)),
                sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                    for c in columns
                    if c not in key
                ),
            )
            target.cursor().executemany(upsert, rows)
            touched += len(rows)
    deleted = source.execute(
        "SELECT entity, entity_id FROM changelog_tombstone WHERE org_id = %s AND version > %s AND version <= %s",
        [org_id, after, upto],
    ).fetchall()
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
            touched += len(ids)
    return touched


def _version(conn: psycopg.Connection, org_id: uuid.UUID, *, lock: bool = False) -> tuple[int, str, int]:
    """(version, epoch, pruned_through) of the org's counter (a new row if it had none)."""
    conn.execute(
        "INSERT INTO org_changes (org_id, version, epoch, pruned_through) VALUES (%s, 0, '1', 0)"
        " ON CONFLICT (org_id) DO NOTHING",
        [org_id],
    )
    row = conn.execute(
        "SELECT version, epoch, pruned_through FROM org_changes WHERE org_id = %s"
        + (" FOR UPDATE" if lock else ""),
        [org_id],
    ).fetchone()
    return int(row[0]), row[1], int(row[2])  # type: ignore[index]  # the org's row exists (a move holds it)


_COUNTS = {
    **{
        table: "SELECT count(*) FROM {} WHERE org_id = %s"
        for table in (*UNVERSIONED, *(t for t, _, _ in VERSIONED))
    },
    ORG: "SELECT count(*) FROM {} WHERE id = %s",
}
# The per-day totals as the rows say they should be (finance/totals.py keeps them so).
_TOTALS_FROM_ROWS = """
SELECT day, property_id, currency, kind, sum(amount), count(*) FROM (
    SELECT occurred_on AS day, property_id, currency, 'expense' AS kind, amount FROM finance_expense WHERE org_id = %s
    UNION ALL
    SELECT occurred_on, property_id, currency, 'revenue', amount FROM finance_revenue WHERE org_id = %s
) rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
_TOTALS = (
    "SELECT day, property_id, currency, kind, total, count FROM finance_daily_total"
    " WHERE org_id = %s AND count > 0 ORDER BY 1, 2, 3, 4"
)


def _verify(source: psycopg.Connection, target: psycopg.Connection, org_id: uuid.UUID) -> list[str]:
    """What differs between the two copies (empty: they agree)."""
    problems = []
    for table, query in _COUNTS.items():
        statement = sql.SQL(query).format(sql.Identifier(table))
        theirs, ours = (c.execute(statement, [org_id]).fetchone()[0] for c in (source, target))  # type: ignore[index]  # count(*) answers one row
        if theirs != ours:
            problems.append(f"{table}: {theirs} rows on the source, {ours} on the target")
    source_totals = source.execute(_TOTALS, [org_id]).fetchall()
    target_from_rows = target.execute(_TOTALS_FROM_ROWS, [org_id, org_id]).fetchall()
    if source_totals != target_from_rows:
        differing = set(source_totals) ^ set(target_from_rows)
        problems.append(
            f"per-day totals differ on {len(differing)} keys, e.g. {sorted(differing, key=str)[:3]}"
        )
    return problems


class OrgMove:
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
        if self.source == self.target:
            raise MoveError(f"org {org_id} is already on {target}")
        self.report = MoveReport(org_id=org_id, source=self.source.name, target=self.target.name)

    def run(self) -> MoveReport:
        placement_change(org_id=self.org_id, state=PlacementState.MOVING)
        try:
            with (
                psycopg.connect(_conninfo(self.source.primary)) as source,
                psycopg.connect(_conninfo(self.target.primary)) as target,
            ):
                applied = self._copy(source, target)
                applied = self._catch_up(source, target, applied)
                self._switch(source, target, applied)
        except BaseException:
            self._abort()
            raise
        if self.clean_source:
            self._clean_source()
        return self.report

    def _copy(self, source: psycopg.Connection, target: psycopg.Connection) -> int:
        started = time.monotonic()
        source.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        version = self._snapshot_version(source)
        _delete_org(target, self.org_id)  # what an earlier, interrupted move left
        for table in (ORG, *(t for t, _, _ in VERSIONED), *UNVERSIONED):
            count = _copy_table(source, target, table, self.org_id, where="id" if table == ORG else "org_id")
            self.report.rows_copied[table] = count
            self.progress(f"copied {table}: {count} rows")
        source.rollback()
        target.commit()
        self.report.copy_seconds = time.monotonic() - started
        self.progress(f"copy done at version {version} in {self.report.copy_seconds:.2f}s")
        return version

    def _snapshot_version(self, source: psycopg.Connection) -> int:
        row = source.execute("SELECT version FROM org_changes WHERE org_id = %s", [self.org_id]).fetchone()
        return 0 if row is None else int(row[0])

    def _catch_up(self, source: psycopg.Connection, target: psycopg.Connection, applied: int) -> int:
        for round_ in range(1, CATCH_UP_ROUNDS + 1):
            now = self._snapshot_version(source)
            source.rollback()
            if now == applied:
                break
            source.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            now = self._snapshot_version(source)
            touched = _apply_changes(source, target, self.org_id, applied, now)
            source.rollback()
            target.commit()
            self.report.changes_applied += touched
            self.progress(f"catch-up round {round_}: versions {applied + 1}..{now}, {touched} rows")
            applied = now
        return applied

    def _switch(self, source: psycopg.Connection, target: psycopg.Connection, applied: int) -> None:
        budget = settings.ORG_MOVE_FENCE_SECONDS
        fenced_at = time.monotonic()
        placement_change(org_id=self.org_id, state=PlacementState.FENCED)
        self.progress(f"fenced: writes wait (at most {budget:g}s) or get 503")
        source.execute("SELECT set_config('lock_timeout', %s, false)", [f"{int(budget * 1000)}ms"])
        version, _, pruned = _version(source, self.org_id, lock=True)  # in-flight writes done, new ones wait
        touched = _apply_changes(source, target, self.org_id, applied, version)
        self.report.changes_applied += touched
        target.execute(f"DELETE FROM {ORG} WHERE id = %s", [self.org_id])
        for table in UNVERSIONED:
            target.execute(
                sql.SQL("DELETE FROM {} WHERE org_id = %s").format(sql.Identifier(table)), [self.org_id]
            )
        target.execute("SET CONSTRAINTS ALL DEFERRED")
        _copy_table(source, target, ORG, self.org_id, where="id")
        for table in UNVERSIONED:
            _copy_table(source, target, table, self.org_id)
        epoch = secrets.token_hex(8)
        target.execute(
            "INSERT INTO org_changes (org_id, version, epoch, pruned_through) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (org_id) DO UPDATE SET version = EXCLUDED.version, epoch = EXCLUDED.epoch,"
            " pruned_through = EXCLUDED.pruned_through",
            [self.org_id, version, epoch, pruned],
        )
        problems = _verify(source, target, self.org_id)
        if problems:
            raise MoveError("verification failed: " + "; ".join(problems))
        if time.monotonic() - fenced_at > budget:
            raise MoveError(f"the switch took longer than ORG_MOVE_FENCE_SECONDS ({budget:g}s)")
        self.progress(f"verified at version {version}: row counts and per-day totals agree")
        target.commit()
        source.execute("UPDATE org_changes SET epoch = %s WHERE org_id = %s", [MOVED_EPOCH, self.org_id])
        placement_change(org_id=self.org_id, state=PlacementState.ACTIVE, cluster=self.target.name)
        source.commit()  # queued writers now meet the moved epoch: 503, and route again
        self.report.fence_seconds = time.monotonic() - fenced_at
        self.report.version, self.report.epoch = version, epoch
        self.progress(
            f"flipped to {self.target.name} at version {version}, epoch {epoch}; fence {self.report.fence_seconds:.3f}s"
        )

    def _abort(self) -> None:
        """Before the flip: the org stays on the source, the target's copy goes."""
        placement = placement_get(org_id=self.org_id, fresh=True)
        if placement is not None and placement.cluster == self.source.name:
            placement_change(org_id=self.org_id, state=PlacementState.ACTIVE)
            with psycopg.connect(_conninfo(self.target.primary)) as target:
                _delete_org(target, self.org_id)
            self.progress("aborted: the org stays on " + self.source.name)

    def _clean_source(self) -> None:
        """Once no process can route by the old placement any more, drop the old copy."""
        bound = settings.DIRECTORY_HEARTBEAT_SECONDS + settings.DIRECTORY_STALE_SECONDS
        self.progress(f"waiting {bound:g}s (the directory cache's bound) before deleting the source's copy")
        time.sleep(bound)
        with psycopg.connect(_conninfo(self.source.primary)) as source:
            _delete_org(source, self.org_id, keep_counter=True)
        self.progress(f"deleted the copy on {self.source.name} (its counter stays, marked moved)")
