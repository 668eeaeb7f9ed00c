"""What Cassandra forgets on its own, forgotten in PostgreSQL too.

* **TTL expiry**: Cassandra emits no event when a TTL runs out (Debezium's documentation: expired
  data produces no change event), so rows whose ``_cdc_expires_at`` has passed are purged here:
  deleted with a tombstone at the row's writetime (hard mode, so a late older event cannot bring
  them back) or marked deleted (soft mode).
* **Tombstones** (of rows, and of partitions and ranges) older than the grace period (Cassandra's ``gc_grace_seconds``, 10 days by
  default) are dropped, as compaction drops Cassandra's own.

Both work in bounded batches so a large purge never holds a long lock; each statement re-checks
its condition on the row it locks, so a concurrent newer write (a new TTL, a revival) wins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from pipeline_defs.lib.cdc.ddl import DELETED, EXPIRES_AT, UPDATED_AT, WRITETIME, Statements, ensure_table
from pipeline_defs.lib.cdc.model import TableSpec
from pipeline_defs.lib.postgres.resource import unavailable_on_failure

BATCH_ROWS = 10_000
DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class ExpiryResult:
    rows_expired: int
    tombstones_dropped: int
    seconds: float


def expire(
    conn: psycopg.Connection, spec: TableSpec, schema: str, *, soft_delete: bool, tombstone_grace_days: float
) -> ExpiryResult:
    """Purge ``spec``'s expired rows and its tombstones past the grace period (autocommit ``conn``)."""
    started = time.monotonic()
    ensure_table(conn, spec, schema, soft_delete)
    st = Statements(spec, schema, (), soft_delete)
    expired = _in_batches(conn, _purge_soft(st) if soft_delete else _purge_hard(st), {"table": spec.pg_table})
    horizon = time.time_ns() // 1000 - int(tombstone_grace_days * DAY_US)
    params = {"table": spec.pg_table, "horizon": horizon}
    dropped = sum(_in_batches(conn, _drop_tombstones(st, name), params) for name in ("_cdc_tombstones", "_cdc_range_tombstones"))
    return ExpiryResult(expired, dropped, round(time.monotonic() - started, 3))


def _in_batches(conn: psycopg.Connection, statement: sql.Composed, params: dict[str, object]) -> int:
    total = 0
    while True:
        with unavailable_on_failure("expiry"), conn.transaction():
            row = conn.execute(statement, {**params, "batch": BATCH_ROWS}).fetchone()
        done = int(row[0]) if row else 0
        total += done
        if done < BATCH_ROWS:
            return total


def _expired_rows(st: Statements, extra: str = "") -> sql.Composed:
    return sql.SQL("SELECT ctid FROM {t} WHERE {e} <= now(){extra} LIMIT %(batch)s FOR UPDATE SKIP LOCKED").format(
        t=st.table, e=sql.Identifier(EXPIRES_AT), extra=sql.SQL(extra)
    )


def _purge_hard(st: Statements) -> sql.Composed:
    return sql.SQL(
        "WITH gone AS (DELETE FROM {t} AS t WHERE t.ctid IN ({rows}) AND t.{e} <= now() RETURNING {key} AS key, t.{wt} AS wt), "
        "tomb AS (INSERT INTO {tombs} AS tb (table_name, key, writetime) SELECT %(table)s, key, wt FROM gone ORDER BY 2 "
        "ON CONFLICT (table_name, key) DO UPDATE SET writetime = GREATEST(tb.writetime, excluded.writetime)) "
        "SELECT count(*) FROM gone"
    ).format(
        t=st.table,
        rows=_expired_rows(st),
        e=sql.Identifier(EXPIRES_AT),
        key=st.key_json("t"),
        wt=sql.Identifier(WRITETIME),
        tombs=st.bookkeeping("_cdc_tombstones"),
    )


def _purge_soft(st: Statements) -> sql.Composed:
    return sql.SQL(
        "WITH gone AS (UPDATE {t} AS t SET {d} = true, {u} = now() WHERE t.ctid IN ({rows}) AND t.{e} <= now() RETURNING 1) "
        "SELECT count(*) FROM gone"
    ).format(
        t=st.table,
        d=sql.Identifier(DELETED),
        u=sql.Identifier(UPDATED_AT),
        rows=_expired_rows(st, f" AND NOT {DELETED}"),
        e=sql.Identifier(EXPIRES_AT),
    )


def _drop_tombstones(st: Statements, name: str) -> sql.Composed:
    return sql.SQL(
        "WITH gone AS (DELETE FROM {tombs} WHERE ctid IN (SELECT ctid FROM {tombs} WHERE table_name = %(table)s "
        "AND writetime < %(horizon)s LIMIT %(batch)s FOR UPDATE SKIP LOCKED) RETURNING 1) SELECT count(*) FROM gone"
    ).format(tombs=st.bookkeeping(name))
