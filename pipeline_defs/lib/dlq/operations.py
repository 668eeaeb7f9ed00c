"""Operations on the DLQ views (replay, resolve, purge), each audited in ``dlq_audit``.

A replay is idempotent per entry: the entries are first marked ``replaying`` under the
operation's id, then produced, then marked ``replayed``. Re-executing the operation (a Dagster
re-execution keeps the root run id) sends again only what it left ``replaying``, never what it
finished; an entry can be sent twice only if the run died between producing it and recording
it, and the pipeline's key deduplication absorbs that copy.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Optional

import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

from pipeline_defs.lib.delta.resource import DeltaLakeResource, as_frame
from pipeline_defs.lib.dlq.records import ClaimStore
from pipeline_defs.lib.dlq.views import PURGED, REPLAY_OF_HEADER, REPLAYED, REPLAYING, RESOLVED, VIEW_SCHEMA, WAITING, DlqViewSpec
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.kafka.resource import KafkaResource

MAX_SELECTION = 100_000

AUDIT_TABLE = "dlq_audit"
AUDIT_SCHEMA = pa.schema(
    [
        pa.field("audit_id", pa.string(), nullable=False),
        pa.field("operation", pa.string(), nullable=False),
        pa.field("dlq", pa.string(), nullable=False),
        pa.field("filters", pa.string(), nullable=False),
        pa.field("entry_ids", pa.list_(pa.string())),
        pa.field("entry_count", pa.int32(), nullable=False),
        pa.field("dry_run", pa.bool_(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("launched_by", pa.string()),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


@dataclass(frozen=True)
class DlqFilter:
    ids: tuple[str, ...] = ()  # entry ids or item ids
    error_category: Optional[str] = None
    seen_after: Optional[datetime] = None
    seen_before: Optional[datetime] = None
    statuses: tuple[str, ...] = (WAITING,)
    max_count: int = 100

    def __post_init__(self) -> None:
        for name, moment in (("seen_after", self.seen_after), ("seen_before", self.seen_before)):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{name} needs a time zone, e.g. 2026-12-01T08:00:00Z")
        if not 1 <= self.max_count <= MAX_SELECTION:
            raise ValueError(f"max_count must be between 1 and {MAX_SELECTION}")

    def as_json(self) -> str:
        return json.dumps(
            {
                "ids": list(self.ids),
                "error_category": self.error_category,
                "seen_after": self.seen_after.isoformat() if self.seen_after else None,
                "seen_before": self.seen_before.isoformat() if self.seen_before else None,
                "statuses": list(self.statuses),
                "max_count": self.max_count,
            },
            sort_keys=True,
        )


def parse_moment(text: str) -> datetime:
    """An ISO time with its zone (``Z`` or an offset); a naive one is refused, not guessed."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z or an offset such as +01:00")
    return moment


def entries(lake: DeltaLakeResource, spec: DlqViewSpec, wanted: DlqFilter) -> pl.DataFrame:
    """The matching entries, oldest first, at most ``max_count``."""
    scan = lake.scan(spec.table)
    if scan is None:
        return as_frame(VIEW_SCHEMA.empty_table())
    conditions = [pl.col("status").is_in(list(wanted.statuses))]
    if wanted.ids:
        conditions.append(pl.col("entry_id").is_in(list(wanted.ids)) | pl.col("item_id").is_in(list(wanted.ids)))
    if wanted.error_category:
        conditions.append(pl.col("error_category") == wanted.error_category)
    if wanted.seen_after:
        conditions.append(pl.col("last_seen") >= wanted.seen_after)
    if wanted.seen_before:
        conditions.append(pl.col("last_seen") < wanted.seen_before)
    return scan.filter(pl.all_horizontal(conditions)).sort("first_seen").head(wanted.max_count).collect()


@dataclass(frozen=True)
class Operation:
    name: str  # replay | resolve | purge
    dlq: str
    filters: DlqFilter
    reason: str
    run_id: str
    launched_by: str
    dry_run: bool = False
    operation_id: str = ""  # stays the same when the operation is re-executed (root run id)
    corrected_value: Optional[bytes] = None  # replay: the one selected entry's value, corrected by the operator

    @property
    def key(self) -> str:
        return self.operation_id or self.run_id


@dataclass
class OperationResult:
    operation: Operation
    entry_ids: list[str] = field(default_factory=list)
    outcome: str = "applied"
    replayed_to: dict[str, int] = field(default_factory=dict)


class RefusedOperation(Exception):
    pass


def replay(
    lake: DeltaLakeResource,
    clusters: Mapping[str, KafkaResource],
    claims: ClaimStore,
    resources: Any,
    spec: DlqViewSpec,
    op: Operation,
) -> OperationResult:
    """Put matching entries back on their pending path (retry count reset) and mark them
    replayed, one entry with the operator's ``corrected_value`` if given; a dry run only lists them. Entries this operation left ``replaying`` (its run
    died mid-way) are taken up again."""
    selected = entries(lake, spec, op.filters)
    unfinished = entries(lake, spec, DlqFilter(statuses=(REPLAYING,), max_count=MAX_SELECTION)).filter(
        pl.col("status_run_id") == op.key
    )
    selected = pl.concat([selected, unfinished]).unique(subset=["entry_id"], keep="first", maintain_order=True)
    if op.corrected_value is not None and selected.height != 1:
        return _refuse(lake, op, f"a corrected value replaces exactly one entry; the filters select {selected.height}")
    result = OperationResult(op, selected["entry_id"].to_list(), outcome="dry_run" if op.dry_run else "applied")
    if op.dry_run or not selected.height:
        write_audit(lake, result)
        return result
    _set_status(lake, spec, result.entry_ids, REPLAYING, op)
    by_topic: dict[str, list[OutRecord]] = {}
    for row in selected.iter_rows(named=True):
        topic, record = spec.replay_record(row, resources, claims)
        value = record.value if op.corrected_value is None else op.corrected_value
        record = OutRecord(value, record.key, [*record.headers, (REPLAY_OF_HEADER, row["entry_id"].encode())])
        by_topic.setdefault(topic, []).append(record)
    kafka = clusters[spec.replay_cluster]
    for topic, records in by_topic.items():
        result.replayed_to[topic] = kafka.produce(topic, records)
    _set_status(lake, spec, result.entry_ids, REPLAYED, op)
    write_audit(lake, result)
    return result


def resolve(lake: DeltaLakeResource, spec: DlqViewSpec, op: Operation) -> OperationResult:
    """Mark matching entries handled, with a reason, without replaying them."""
    if not op.reason.strip():
        return _refuse(lake, op, "resolve needs a reason")
    selected = entries(lake, spec, op.filters)
    result = OperationResult(op, selected["entry_id"].to_list(), outcome="dry_run" if op.dry_run else "applied")
    if not op.dry_run and selected.height:
        _set_status(lake, spec, result.entry_ids, RESOLVED, op)
    write_audit(lake, result)
    return result


def purge(lake: DeltaLakeResource, spec: DlqViewSpec, op: Operation, confirmed: bool) -> OperationResult:
    """Remove matching entries from the view (payload dropped, tombstone kept). Refused
    unless ``confirmed``."""
    if not confirmed:
        return _refuse(lake, op, "purge refused: set confirm to true to remove entries")
    selected = entries(lake, spec, op.filters)
    result = OperationResult(op, selected["entry_id"].to_list(), outcome="dry_run" if op.dry_run else "applied")
    if not op.dry_run and selected.height:
        _set_status(lake, spec, result.entry_ids, PURGED, op, drop_payload=True)
    write_audit(lake, result)
    return result


def _refuse(lake: DeltaLakeResource, op: Operation, why: str) -> OperationResult:
    write_audit(lake, OperationResult(op, [], outcome="refused"))
    raise RefusedOperation(why)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _set_status(
    lake: DeltaLakeResource, spec: DlqViewSpec, entry_ids: Sequence[str], status: str, op: Operation, drop_payload: bool = False
) -> None:
    table = lake.load(spec.table)
    assert table is not None
    updates = {
        "status": _quoted(status),
        "status_reason": _quoted(op.reason),
        "status_changed_at": "now()",
        "status_run_id": _quoted(op.key),
    }
    if drop_payload:
        updates |= {"payload": "NULL", "payload_key": "NULL", "payload_headers": "NULL"}
    table.update(updates=updates, predicate=f"entry_id IN ({', '.join(_quoted(i) for i in entry_ids)})")


def write_audit(lake: DeltaLakeResource, result: OperationResult) -> None:
    op = result.operation
    row = {
        "audit_id": str(uuid.uuid4()),
        "operation": op.name,
        "dlq": op.dlq,
        "filters": op.filters.as_json(),
        "entry_ids": result.entry_ids,
        "entry_count": len(result.entry_ids),
        "dry_run": op.dry_run,
        "outcome": result.outcome,
        "reason": op.reason,
        "run_id": op.run_id,
        "launched_by": op.launched_by,
        "at": datetime.now(UTC),
    }
    table = lake.ensure(AUDIT_TABLE, AUDIT_SCHEMA, [])
    write_deltalake(table, pa.Table.from_pylist([row], schema=AUDIT_SCHEMA), mode="append")
