"""Replication checked against its source: for a sample of keys, the newest event in the tail of
the table's topic, compared with the PostgreSQL row. Only offsets ``_cdc_offsets`` holds as
applied are read: an event still on its way is never blamed. What the tail cannot settle is
*inconclusive*, counted, never a mismatch: a row newer than the tail (out of order, the newest
writetime sits at an earlier, unscanned offset; or replication moved on), a range delete, two
upserts at one writetime, an event the sink refuses, a row deleted at or after the event (an
earlier delete, a TTL expiry). PostgreSQL compares the values (``IS DISTINCT FROM`` on the cells
staged in the table's own column types, as the sink stages them): NaN, numeric, jsonb as stored.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import psycopg
from psycopg import sql

from pipeline_defs.lib.cdc import ddl
from pipeline_defs.lib.cdc.envelope import parse_change
from pipeline_defs.lib.cdc.model import ChangeEvent, Op, TableSpec
from pipeline_defs.lib.cdc.sink import structural_problem
from pipeline_defs.lib.ingest.guard import guarded
from pipeline_defs.lib.kafka.ranges import OffsetRange, PartitionState
from pipeline_defs.lib.kafka.records import position
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.postgres.binary_copy import BinaryRows, copy_stream
from pipeline_defs.lib.postgres.resource import unavailable_on_failure

MATCHED, MISMATCHED, INCONCLUSIVE = "matched", "mismatched", "inconclusive"
READ_TIMEOUT_S = 120


@dataclass
class Latest:
    """A key's newest event in the scanned tail."""

    event: ChangeEvent
    source: ddl.Source
    tie: bool = False  # another upsert, with other cells, at the same writetime: which one won is unknown

    @property
    def order(self) -> tuple[int, bool]:
        return self.event.writetime_us, self.event.op is Op.DELETE  # a delete wins a tie, as in Cassandra


@dataclass(frozen=True)
class Observed:
    """What PostgreSQL holds for a key."""

    row_writetime: Optional[int] = None  # None: no row
    deleted: bool = False  # soft delete mode's flag
    tombstone: Optional[int] = None  # the newest tombstone over the key: its own (hard mode), a range delete's
    differs: tuple[str, ...] = ()  # columns the event set whose value the row does not hold
    refused: bool = False  # the sink cannot have applied the event


@dataclass(frozen=True)
class Mismatch:
    key: str  # the key as JSON; never a column's value (claims data)
    reason: str
    columns: tuple[str, ...]
    event_writetime: int
    row_writetime: Optional[int]


@dataclass
class ReconcileResult:
    scanned: int = 0  # records read from the tail
    keys: int = 0  # distinct keys in the tail
    checked: int = 0
    matched: int = 0
    mismatched: int = 0
    inconclusive: dict[str, int] = field(default_factory=dict)  # reason -> keys
    samples: list[Mismatch] = field(default_factory=list)

    @property
    def inconclusive_total(self) -> int:
        return sum(self.inconclusive.values())


class Tail:
    """The newest event of each key, and the range deletes, of the records scanned."""

    def __init__(self, spec: TableSpec):
        self.spec = spec
        self.latest: dict[str, Latest] = {}
        self.range_deletes: list[dict[str, Any]] = []

    def add(self, event: ChangeEvent, source: ddl.Source) -> None:
        if event.range_delete is not None:
            self.range_deletes.append(event.range_delete)
            return
        key = json.dumps([event.key.get(k) for k in self.spec.primary_key], sort_keys=True, default=repr)
        new, held = Latest(event, source), self.latest.get(key)
        if held is None or new.order > held.order:
            self.latest[key] = new
        elif new.order == held.order and event.op is not Op.DELETE:
            held.tie = held.tie or (event.cells, event.new_columns) != (held.event.cells, held.event.new_columns)

    def range_deleted(self, latest: Latest) -> bool:
        return any(all(latest.event.key.get(k) == v for k, v in prefix.items()) for prefix in self.range_deletes)

    def sample(self, n: int, seed: Optional[int] = None) -> list[Latest]:
        """Up to ``n`` keys, at random (reproducible with ``seed``)."""
        keys = sorted(self.latest)
        keys = random.Random(seed).sample(keys, n) if len(keys) > n else keys
        return [self.latest[k] for k in keys]


def tail_ranges(
    topic: str, applied: Mapping[int, int], states: Mapping[int, PartitionState], per_partition: int
) -> list[OffsetRange]:
    """The last ``per_partition`` applied offsets of each partition still in the log."""
    ranges = []
    for partition, next_offset in sorted(applied.items()):
        if partition in states:
            end = min(next_offset, states[partition].high)  # a recreated topic: never wait past its end
            start = max(states[partition].low, end - per_partition)
            ranges += [OffsetRange(topic, partition, start, end)] if end > start else []
    return ranges


def classify(latest: Latest, seen: Observed, *, range_deleted: bool, now_us: int) -> tuple[str, str, tuple[str, ...]]:
    """A key's outcome, why, and the columns that differ."""
    event, wt, row_wt = latest.event, latest.event.writetime_us, seen.row_writetime
    if range_deleted:
        return INCONCLUSIVE, "range_delete_in_tail", ()
    if seen.refused:
        return INCONCLUSIVE, "refused_by_sink", ()
    if event.op is Op.DELETE:
        if row_wt is None or (seen.deleted and row_wt >= wt):
            return MATCHED, "", ()
        if seen.deleted:
            return MISMATCHED, "lost_update", (ddl.WRITETIME,)
        if row_wt > wt:
            return INCONCLUSIVE, "row_newer_than_tail", ()
        return MISMATCHED, "delete_not_applied", ()
    if latest.tie:
        return INCONCLUSIVE, "writetime_tie", ()
    if row_wt is not None and row_wt > wt:
        return INCONCLUSIVE, "row_newer_than_tail", ()
    if row_wt is None or seen.deleted:
        floor = row_wt if seen.deleted else seen.tombstone
        if floor is not None and floor >= wt:
            return INCONCLUSIVE, "deleted_at_or_after_event", ()
        if any(c.expires_at_us is not None and c.expires_at_us <= now_us for c in event.cells.values()):
            return INCONCLUSIVE, "ttl_expired", ()
        return MISMATCHED, "row_deleted" if seen.deleted else "row_missing", ()
    if row_wt < wt:
        return MISMATCHED, "lost_update", (ddl.WRITETIME,)
    return (MISMATCHED, "values_differ", seen.differs) if seen.differs else (MATCHED, "", ())


def reconcile(
    kafka: KafkaResource,
    conn: psycopg.Connection,
    spec: TableSpec,
    *,
    schema: str,
    consumer_group: str,
    soft_delete: bool,
    scan_events: int,
    sample_keys: int,
    seed: Optional[int] = None,
    max_samples: int = 20,
) -> ReconcileResult:
    """Read up to ``scan_events`` applied records from the end of each partition, and compare up
    to ``sample_keys`` of their keys with PostgreSQL (``conn`` outside any transaction)."""
    result, tail = ReconcileResult(), Tail(spec)
    with unavailable_on_failure(f"reconcile {spec.pg_table}"):
        applied = ddl.applied_offsets(conn, schema, consumer_group, spec.topic) if _exists(conn, schema, "_cdc_offsets") else {}
        states = kafka.partition_states(spec.topic, kafka.connection.request_timeout_s) if applied else {}
        ranges = tail_ranges(spec.topic, applied, states, scan_events)
        for batch in kafka.read_ranges(ranges, f"{consumer_group}.reconcile", 5_000, READ_TIMEOUT_S):
            for message in batch:
                event = guarded("decode change event", parse_change, message.value(), message.key(), spec)
                if isinstance(event, ChangeEvent):  # not a rejected record, not a Kafka tombstone
                    tail.add(event, position(message))
            result.scanned += len(batch)
        result.keys, sampled = len(tail.latest), tail.sample(sample_keys, seed)
        observed = observe(conn, spec, schema, consumer_group, soft_delete, sampled)
    now = time.time_ns() // 1000
    for latest, seen in zip(sampled, observed):
        outcome, reason, columns = classify(latest, seen, range_deleted=tail.range_deleted(latest), now_us=now)
        result.checked += 1
        if outcome == MATCHED:
            result.matched += 1
        elif outcome == INCONCLUSIVE:
            result.inconclusive[reason] = result.inconclusive.get(reason, 0) + 1
        else:
            result.mismatched += 1
            if len(result.samples) < max_samples:
                key = json.dumps(latest.event.key, sort_keys=True, default=str)
                result.samples.append(Mismatch(key, reason, columns, latest.event.writetime_us, seen.row_writetime))
    return result


def _exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    name = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)).as_string(conn)
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()
    return bool(found and found[0])


def observe(
    conn: psycopg.Connection, spec: TableSpec, schema: str, group: str, soft_delete: bool, sampled: Sequence[Latest]
) -> list[Observed]:
    """What PostgreSQL holds for each sampled key, in one transaction."""
    st = ddl.Statements(spec, schema, (), soft_delete)
    existing = ddl.table_columns(conn, spec, schema)
    if not existing:  # no table yet: no rows
        return [Observed() for _ in sampled]
    declared = {c.name for c in spec.columns if c.name not in spec.primary_key}
    failed = _failed_records(conn, st, group)
    refused = {
        i for i, latest in enumerate(sampled) if latest.source in failed or structural_problem(latest.event, spec, declared)
    }
    cells = [_cells(latest.event) for latest in sampled]
    columns = [name for name in existing if name not in spec.primary_key and any(name in values for values in cells)]
    with conn.transaction():
        cur = conn.cursor()
        # the sink's stage name and ``_i``, so its ``prefetch`` reads the row and tombstone writetimes
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ddl.STAGE))
        create = "CREATE TEMP TABLE _cdc_stage ON COMMIT DROP AS SELECT {}, NULL::boolean[] AS _cdc_mask, NULL::int AS _i FROM {} WITH NO DATA"
        cur.execute(sql.SQL(create).format(sql.SQL(", ").join(map(sql.Identifier, [*spec.primary_key, *columns])), st.table))
        types = "SELECT atttypid::int FROM pg_attribute WHERE attrelid = 'pg_temp._cdc_stage'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        stager = BinaryRows(conn, [oid for (oid,) in cur.execute(types)])
        frames: dict[int, bytes] = {}
        for i, (latest, values) in enumerate(zip(sampled, cells)):
            if i in refused:
                continue
            keys = [latest.event.key[k] for k in spec.primary_key]
            try:
                frames[i] = stager.frame([*keys, *(values.get(c) for c in columns), [c in values for c in columns], i])
            except Exception:  # noqa: BLE001 - a value its column cannot take: the sink refused it too
                refused.add(i)
        refused |= _copy(conn, frames)
        floors = {i: (wt, tomb) for i, wt, tomb in cur.execute(st.prefetch(), {"table": spec.pg_table, "only": None})}
        rows = cur.execute(_compare(st, columns)).fetchall()
    observed = [Observed(refused=True)] * len(sampled)
    for i, deleted, differs in rows:
        wt, tomb = floors.get(i, (None, None))
        observed[i] = Observed(wt, deleted, tomb, (*differs, *sorted(set(cells[i]) - set(existing))))
    return observed


def _cells(event: ChangeEvent) -> dict[str, Any]:
    """The columns an event set and the values the sink stages for them."""
    values = {c.name: c.value for c in event.new_columns}
    values.update({name: None if cell.deleted else cell.value for name, cell in event.cells.items()})
    return values


def _failed_records(conn: psycopg.Connection, st: ddl.Statements, group: str) -> set[tuple[str, int, int]]:
    """Records PostgreSQL refused (``failures``): dead-lettered, or applied only after retries."""
    if not _exists(conn, st.schema, "_cdc_record_failures"):
        return set()
    query = sql.SQL('SELECT topic, "partition", "offset" FROM {} WHERE consumer_group = %s AND topic = %s')
    return set(conn.execute(query.format(st.bookkeeping("_cdc_record_failures")), [group, st.spec.topic]).fetchall())


def _copy(conn: psycopg.Connection, frames: Mapping[int, bytes]) -> set[int]:
    """Stage the framed rows; those PostgreSQL refuses (as it refused them to the sink) are returned."""
    copy, refused, batches = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(ddl.STAGE), set(), [list(frames)]
    while batches:  # all at once; on a refusal, halves until the culprits are alone
        batch = batches.pop()
        try:
            with conn.transaction(), conn.cursor().copy(copy) as out:
                out.write(copy_stream(frames[i] for i in batch))
        except psycopg.DataError:
            if len(batch) == 1:
                refused.add(batch[0])
            else:
                batches += [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
    return refused


def _compare(st: ddl.Statements, columns: Sequence[str]) -> sql.Composed:
    """Per staged key: the row's deleted flag (soft delete mode) and the columns that differ."""
    cases = [
        sql.SQL("CASE WHEN s._cdc_mask[{}] AND s.{c} IS DISTINCT FROM t.{c} THEN {} END").format(
            sql.Literal(i), sql.Literal(name), c=sql.Identifier(name)
        )
        for i, name in enumerate(columns, start=1)
    ]
    deleted = sql.SQL("coalesce(t.{}, false)").format(sql.Identifier(ddl.DELETED)) if st.soft_delete else sql.SQL("false")
    match = sql.SQL(" AND ").join(sql.SQL("t.{k} = s.{k}").format(k=sql.Identifier(k)) for k in st.spec.primary_key)
    return sql.SQL("SELECT s._i, {}, array_remove(ARRAY[{}]::text[], NULL) FROM {} s LEFT JOIN {} t ON {}").format(
        deleted, sql.SQL(", ").join(cases), ddl.STAGE, st.table, match
    )
