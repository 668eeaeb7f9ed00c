"""Change events applied to PostgreSQL: exactly once per consumer group and partition, newest
writetime winning, one transaction per batch.

A batch: lock the group's offset rows and drop the events a previous run already applied;
collapse each key's events (writetime order; later cells win, a delete wipes the cells before
it); binary-COPY one row per key into a temporary stage; read the keys' row and tombstone
writetimes to set aside (and audit) events older than the row, recollapsing those keys; one
INSERT .. ON CONFLICT whose WHERE re-checks the writetime on the row it locked; hard deletes and
their tombstones; the audit rows; the new offsets; commit. A value PostgreSQL cannot take
rejects its events, never the batch. See ``ddl.Statements`` for the SQL.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, Optional

import psycopg
from psycopg import pq
from psycopg.types.json import Jsonb

from pipeline_defs.lib.cdc import ddl
from pipeline_defs.lib.cdc.model import ChangeEvent, NewColumn, Op, TableSpec
from pipeline_defs.lib.ingest.guard import RejectedRecord
from pipeline_defs.lib.postgres.binary_copy import BinaryRows, copy_stream, unstorable_reason
from pipeline_defs.lib.postgres.resource import PostgresUnavailable, unavailable_on_failure

DEFAULT_STALE_THRESHOLD_US = 7 * 24 * 3600 * 1_000_000
OLDER_THAN_ROW = "older_than_row"
OLDER_THAN_THRESHOLD = "older_than_threshold"
INVALID = "invalid"
Source = ddl.Source


@dataclass(frozen=True)
class AuditRow:
    """An event older than the row it targets (not applied) or than the threshold (flagged)."""

    table_name: str
    key: dict[str, Any]  # JSON-ready
    event_writetime: int
    row_writetime: Optional[int]
    position: str
    topic: str
    partition: int
    offset: int
    reason: str


@dataclass
class ApplyResult:
    inserted: int = 0  # rows
    updated: int = 0  # rows
    deleted: int = 0  # rows deleted (hard) or marked deleted (soft)
    applied: int = 0  # events newer than their row
    stale: int = 0  # events older than their row: not applied
    already_applied: int = 0  # events below the stored next offset: skipped
    audit: list[AuditRow] = field(default_factory=list)
    rejected: list[tuple[Source, RejectedRecord]] = field(default_factory=list)
    added_columns: list[str] = field(default_factory=list)
    newest_writetime_us: Optional[int] = None


@dataclass(eq=False)  # identity: two equal events at two offsets are two items
class _Item:
    event: ChangeEvent
    source: Source

    @property
    def order(self) -> tuple[int, bool, Source]:
        # writetime, then a delete after an upsert of the same writetime (Cassandra: delete wins)
        return (self.event.writetime_us, self.event.op is Op.DELETE, self.source)


@dataclass
class _Group:
    key: dict[str, Any]
    items: list[_Item]
    floor: Optional[int] = None  # the row's (or tombstone's) writetime before this batch
    stale: list[_Item] = field(default_factory=list)
    row: Optional[_Collapsed] = None  # what was staged

    @property
    def applied(self) -> list[_Item]:
        if not self.stale:
            return self.items
        stale = set(map(id, self.stale))
        return [i for i in self.items if id(i) not in stale]


class _BadRow(Exception):
    """PostgreSQL refused a staged value (a DataError naming the COPY line)."""

    def __init__(self, items: list[_Item], reason: str):
        super().__init__(reason)
        self.items, self.reason = items, reason


def apply(
    conn: psycopg.Connection,
    spec: TableSpec,
    events: Sequence[tuple[ChangeEvent, Source]],
    offsets: Mapping[tuple[str, int], int],
    consumer_group: str,
    *,
    soft_delete: bool = False,
    stale_threshold_us: Optional[int] = DEFAULT_STALE_THRESHOLD_US,
    now_us: Optional[int] = None,
    schema: str = "cdc",
    dry_run: bool = False,
) -> ApplyResult:
    """Apply ``events`` (each with its topic, partition, offset) and advance the group's
    ``offsets`` ((topic, partition) -> next offset) in one transaction (rolled back if
    ``dry_run``). ``conn`` must be outside any transaction. Connection and concurrency failures
    raise ``PostgresUnavailable``."""
    status = conn.info.transaction_status
    if conn.closed or status == pq.TransactionStatus.UNKNOWN:
        raise PostgresUnavailable(f"PostgreSQL apply to {spec.pg_table}: the connection is closed or broken")
    if status != pq.TransactionStatus.IDLE:
        raise ValueError("apply needs a connection outside any transaction")
    now = now_us if now_us is not None else time.time_ns() // 1000
    refused: dict[int, RejectedRecord] = {}
    while True:  # each pass either commits or rejects at least one more event
        try:
            with unavailable_on_failure(f"apply to {spec.pg_table}"):
                return _Batch(conn, spec, schema, soft_delete, consumer_group).run(
                    events, offsets, refused, stale_threshold_us, now, dry_run
                )
        except _BadRow as bad:
            for item in bad.items:
                refused[id(item.event)] = RejectedRecord(INVALID, bad.reason)


class _Batch:
    def __init__(self, conn: psycopg.Connection, spec: TableSpec, schema: str, soft_delete: bool, group: str):
        self.conn, self.spec, self.schema, self.soft, self.group = conn, spec, schema, soft_delete, group
        self.cur = conn.cursor()
        self.result = ApplyResult()
        self.data = [(n, t) for n, t in ddl.column_types(spec) if n not in spec.primary_key]
        self.declared = {n for n, _ in self.data}

    def run(
        self,
        events: Sequence[tuple[ChangeEvent, Source]],
        offsets: Mapping[tuple[str, int], int],
        refused: dict[int, RejectedRecord],
        threshold: Optional[int],
        now: int,
        dry_run: bool,
    ) -> ApplyResult:
        items = [_Item(event, source) for event, source in events]
        partitions = sorted({*offsets, *((i.source[0], i.source[1]) for i in items)})
        after = dict(offsets)
        for item in items:
            tp = (item.source[0], item.source[1])
            after[tp] = max(after.get(tp, 0), item.source[2] + 1)
        with self.conn.transaction(force_rollback=dry_run):
            self.cur.execute("SET LOCAL TimeZone TO 'UTC'")
            stored = self._lock_offsets(partitions)
            fresh = [i for i in items if i.source[2] >= stored.get((i.source[0], i.source[1]), 0)]
            self.result.already_applied = len(items) - len(fresh)
            fresh = [i for i in fresh if not self._refused(i, refused)]
            self._add_columns(fresh)
            self.st = ddl.Statements(self.spec, self.schema, tuple(self.data), self.soft)
            ranges = [i for i in fresh if i.event.range_delete is not None]
            groups = self._groups([i for i in fresh if i.event.range_delete is None])
            if groups:
                self._write(groups)
            for item in ranges:
                self._range_delete(item)
            self._audit(groups, threshold, now)
            self.cur.execute(self.st.save_offsets(), self._partition_params(list(after), [after[tp] for tp in after]))
        return self.result

    def _refused(self, item: _Item, refused: dict[int, RejectedRecord]) -> bool:
        problem = refused.get(id(item.event)) or structural_problem(item.event, self.spec, self.declared)
        if problem:
            self.result.rejected.append((item.source, problem))
        return problem is not None

    def _partition_params(self, partitions: list[tuple[str, int]], nexts: Optional[list[int]] = None) -> dict[str, Any]:
        return {
            "group": self.group,
            "topics": [t for t, _ in partitions],
            "partitions": [p for _, p in partitions],
            "next": nexts,
        }

    def _lock_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        create, lock = ddl.Statements(self.spec, self.schema, (), self.soft).lock_offsets()
        params = self._partition_params(partitions)
        self.cur.execute(create, params)
        return {(t, p): n for t, p, n in self.cur.execute(lock, params).fetchall()}

    def _add_columns(self, items: list[_Item]) -> None:
        """Columns the events carry and the declaration lacks: added in this transaction."""
        seen: dict[str, tuple[NewColumn, Source]] = {}
        for item in items:
            for column in item.event.new_columns:
                seen.setdefault(column.name, (column, item.source))
        if not seen:
            return
        existing = ddl.table_columns(self.conn, self.spec, self.schema)
        for column, source in seen.values():
            if column.name not in existing:
                ddl.add_columns(self.conn, self.spec, [column], schema=self.schema, source=source)
                self.result.added_columns.append(column.name)
        existing = ddl.table_columns(self.conn, self.spec, self.schema)
        staged = {n for n, _ in self.data}
        self.data += [(name, existing[name]) for name in seen if name not in staged]

    def _groups(self, items: list[_Item]) -> list[_Group]:
        groups: dict[Any, _Group] = {}
        for item in sorted(items, key=lambda i: i.order):
            key = {k: item.event.key[k] for k in self.spec.primary_key}
            groups.setdefault(tuple(_freeze(v) for v in key.values()), _Group(key, [])).items.append(item)
        return list(groups.values())

    def _write(self, groups: list[_Group]) -> None:
        self.cur.execute(self.st.create_stage())
        stage_types = "SELECT atttypid::int FROM pg_attribute WHERE attrelid = 'pg_temp._cdc_stage'::regclass AND attnum > 0 ORDER BY attnum"
        oids = [oid for (oid,) in self.cur.execute(stage_types)]
        self.stager = BinaryRows(self.conn, oids)
        self._copy(groups, range(len(groups)))
        table = {"table": self.spec.pg_table}
        floors = self.cur.execute(self.st.prefetch(), {**table, "only": None}).fetchall()
        changed = []
        for i, row_wt, tomb_wt in floors:
            group = groups[i]
            group.floor = max(w for w in (row_wt, tomb_wt) if w is not None)
            group.stale = [it for it in group.items if not _newer(it, group.floor)]
            if group.stale:
                changed.append(i)
        if changed:  # restage those keys with only their newer events
            self.cur.execute("DELETE FROM pg_temp._cdc_stage WHERE _i = ANY(%s)", [changed])
            self._copy(groups, [i for i in changed if groups[i].applied])
        upserted = self.cur.execute(self.st.upsert(), table).fetchall()
        for i, inserted in upserted:
            if groups[i].row.delete:  # type: ignore[union-attr]  # every upserted group was staged
                self.result.deleted += 1
            elif inserted:
                self.result.inserted += 1
            else:
                self.result.updated += 1
        if not self.soft:
            self.result.deleted += len(self.cur.execute(self.st.hard_delete(), table).fetchall())
        staged_upserts = {i for i, g in enumerate(groups) if g.applied and g.row and (self.soft or not g.row.delete)}
        lost = sorted(staged_upserts - {i for i, _ in upserted})
        if lost:  # a concurrent writer got there first with a newer mutation
            for i, row_wt, tomb_wt in self.cur.execute(self.st.prefetch(), {**table, "only": lost}).fetchall():
                groups[i].floor = max(w for w in (row_wt, tomb_wt) if w is not None)
                groups[i].stale = list(groups[i].items)

    def _copy(self, groups: list[_Group], indexes: Sequence[int]) -> None:
        chunks, staged = [], []
        for i in indexes:
            group = groups[i]
            while group.applied:
                group.row = _collapse(group.applied)
                try:
                    chunks.append(self.stager.frame(_stage_row(group.row, group.key, i, self.spec, self.data)))
                    staged.append(group)
                    break
                except Exception:  # noqa: BLE001 - a value its column cannot take: find whose, reject it
                    self._reject_culprits(group, i)
        try:
            with self.cur.copy(self.st.copy_stage()) as copy:
                copy.write(copy_stream(chunks))
        except psycopg.errors.DataError as error:
            line = re.search(r"line (\d+)", getattr(error.diag, "context", None) or "")
            column = re.search(r"column (\w+)", getattr(error.diag, "context", None) or "")
            if not line or int(line.group(1)) > len(staged):
                raise
            reason = f"PostgreSQL refused column {column.group(1) if column else '?'}: {type(error).__name__}"
            raise _BadRow(staged[int(line.group(1)) - 1].applied, reason) from None

    def _reject_culprits(self, group: _Group, i: int) -> None:
        culprits: dict[int, str] = {}
        for item in group.applied:
            try:
                self.stager.frame(_stage_row(_collapse([item]), group.key, i, self.spec, self.data))
            except Exception as error:  # noqa: BLE001
                culprits[id(item)] = f"value not storable in PostgreSQL: {unstorable_reason(error)}"
        if not culprits:  # each alone fits, together they do not: none can be applied
            culprits = {id(item): "values not storable together in PostgreSQL" for item in group.applied}
        for item in group.applied:
            if id(item) in culprits:
                self.result.rejected.append((item.source, RejectedRecord(INVALID, culprits[id(item)])))
        group.items = [it for it in group.items if id(it) not in culprits]

    def _range_delete(self, item: _Item) -> None:
        prefix = item.event.range_delete or {}
        wt = item.event.writetime_us
        params = [*([wt] if self.soft else []), *prefix.values(), wt]
        self.cur.execute(self.st.range_delete(list(prefix)), params)
        self.result.deleted += max(self.cur.rowcount, 0)
        self.cur.execute(self.st.remember_range(list(prefix)), [self.spec.pg_table, *prefix.values(), wt])
        self.result.applied += 1

    def _audit(self, groups: list[_Group], threshold: Optional[int], now: int) -> None:
        audit = self.result.audit
        for group in groups:
            stale = set(map(id, group.stale))
            for item in group.items:
                event, (topic, partition, offset) = item.event, item.source
                reason = OLDER_THAN_ROW if id(item) in stale else None
                if reason is None and threshold is not None and now - event.writetime_us > threshold:
                    reason = OLDER_THAN_THRESHOLD
                if reason:
                    audit.append(AuditRow(self.spec.pg_table, _jsonable(group.key), event.writetime_us, group.floor, event.position, topic, partition, offset, reason))  # fmt: skip
            self.result.stale += len(group.stale)
            applied = group.applied
            self.result.applied += len(applied)
            newest = max((i.event.writetime_us for i in applied), default=None)
            if newest is not None and (self.result.newest_writetime_us or 0) < newest:
                self.result.newest_writetime_us = newest
        if audit:
            with self.cur.copy(self.st.copy_audit()) as copy:
                for row in map(astuple, audit):
                    copy.write_row([row[0], Jsonb(row[1]), row[2], row[3], row[4].replace("\x00", ""), *row[5:]])


def _newer(item: _Item, floor: int) -> bool:
    """Newer than the row: an upsert strictly, a delete also on a tie (Cassandra: delete wins)."""
    wt = item.event.writetime_us
    return wt >= floor if item.event.op is Op.DELETE else wt > floor


@dataclass
class _Collapsed:
    delete: bool = False
    wiped: bool = False  # a delete came first: every column not set is null
    values: dict[str, Any] = field(default_factory=dict)
    expires_us: Optional[int] = None
    expires_set: bool = False
    writetime: int = 0


def _collapse(items: list[_Item]) -> _Collapsed:
    row = _Collapsed()
    for item in items:
        event = item.event
        if event.op is Op.DELETE:
            row = _Collapsed(delete=True, wiped=True)
        else:
            row.delete = False
            row.values.update({c.name: c.value for c in event.new_columns})
            row.values.update({name: None if cell.deleted else cell.value for name, cell in event.cells.items()})
            ttls = [c.expires_at_us for c in event.cells.values() if c.expires_at_us is not None]
            if ttls:
                row.expires_us, row.expires_set = max(ttls), True
            elif event.op is Op.CREATE:  # an INSERT without TTL: the row lives on (an UPDATE's cells alone do not say)
                row.expires_us, row.expires_set = None, True
        row.writetime = event.writetime_us
    return row


def _stage_row(row: _Collapsed, key: dict[str, Any], i: int, spec: TableSpec, data: list[tuple[str, str]]) -> list[Any]:
    names = [n for n, _ in data]
    if row.delete:
        mask = [False] * (len(names) + 1)
    elif row.wiped:
        mask = [True] * (len(names) + 1)
    else:
        mask = [n in row.values for n in names] + [row.expires_set]
    expires = datetime.fromtimestamp(row.expires_us / 1e6, UTC) if row.expires_us is not None else None
    keys = [key[k] for k in spec.primary_key]
    return [*keys, *(row.values.get(n) for n in names), expires, mask, row.writetime, row.delete, i]


def structural_problem(event: ChangeEvent, spec: TableSpec, data: set[str]) -> Optional[RejectedRecord]:
    """What makes an event unusable whatever the table holds (checked before any SQL)."""
    if event.table.pg_table != spec.pg_table:
        return RejectedRecord(INVALID, f"event for {event.table.pg_table}, not {spec.pg_table}")
    if event.range_delete is not None:
        prefix = list(event.range_delete)
        if not prefix or prefix != list(spec.primary_key[: len(prefix)]) or any(v is None for v in event.range_delete.values()):
            return RejectedRecord(INVALID, "range delete is not over a primary key prefix")
        return None
    missing = [k for k in spec.primary_key if event.key.get(k) is None]
    if missing:
        return RejectedRecord(INVALID, f"key lacks {missing}")
    new = {c.name for c in event.new_columns}
    for column in event.new_columns:
        if column.name.startswith("_cdc") or column.name in spec.primary_key:
            return RejectedRecord(INVALID, f"new column {column.name!r} clashes with a reserved or key column")
        try:
            ddl.safe_type(column.pg_type)
        except ValueError:
            return RejectedRecord(INVALID, f"new column {column.name!r} has no usable type")
    unknown = [n for n in event.cells if n not in data and n not in new and n not in spec.primary_key]
    if unknown:
        return RejectedRecord(INVALID, f"cells for undeclared columns {unknown[:5]}")
    return None


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a key value (frozen collections can be key columns)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted(((str(k), _freeze(v)) for k, v in value.items()), key=lambda kv: kv[0]))
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    if isinstance(value, Jsonb):
        return ("jsonb", _freeze(value.obj))
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def _jsonable(value: Any) -> Any:
    """A key as JSON for the audit (and its Kafka topic)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Jsonb):
        return _jsonable(value.obj)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value.total_seconds())
    return str(value)
