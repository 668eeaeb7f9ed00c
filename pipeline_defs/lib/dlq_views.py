"""DLQ views: a Delta table per dead-letter topic with one row per failed item, and the
operations on them (replay, resolve, purge), each audited in ``dlq_audit``.

A view row is the item's latest state: merged on ``entry_id`` (a stable id of the failed item,
so a replayed item that fails again updates its row instead of adding one), updated only by a
newer dead letter. Purge leaves a tombstone without payload, so re-reading the topic cannot
bring a purged entry back.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional, Sequence

import polars as pl
import pyarrow as pa
from confluent_kafka import Message
from deltalake import CommitProperties, DeltaTable, write_deltalake

from pipeline_defs.lib.delta import DeltaLakeResource
from pipeline_defs.lib.dlq import HEADER_PREFIX, error_headers
from pipeline_defs.lib.kafka import KafkaResource, OutRecord
from pipeline_defs.lib.kafka_to_delta import LINEAGE_COLUMNS, PARTITION_COLUMN, BatchContext, lineage
from pipeline_defs.lib.settings import PipelineConfigResource

REPLAY_OF_HEADER = "__dlq.replay.of"  # carried by replayed records, so a re-failure keeps its entry

WAITING, REPLAYED, RESOLVED, PURGED = "waiting", "replayed", "resolved", "purged"

VIEW_COLUMNS = pa.schema(
    [
        pa.field("entry_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string()),
        pa.field("error_category", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("retry_count", pa.int32()),
        pa.field("first_seen", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("last_seen", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("source_topic", pa.string()),
        pa.field("source_partition", pa.int32()),
        pa.field("source_offset", pa.int64()),
        pa.field("payload", pa.binary()),
        pa.field("payload_key", pa.binary()),
        pa.field("payload_headers", pa.string()),  # JSON [[name, base64?]] of the original headers
        pa.field("status", pa.string(), nullable=False),
        pa.field("status_reason", pa.string()),
        pa.field("status_changed_at", pa.timestamp("us", tz="UTC")),
        pa.field("status_run_id", pa.string()),
    ]
)
VIEW_SCHEMA = pa.unify_schemas([VIEW_COLUMNS, LINEAGE_COLUMNS])

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
class DeadLetter:
    """What a domain makes of one dead-letter message."""

    entry_id: str
    item_id: Optional[str]
    retry_count: int = 0


@dataclass(frozen=True)
class DlqViewSpec:
    """One dead-letter topic and how its entries are identified and replayed."""

    name: str  # e.g. xact_downloads
    topic_of: Callable[[PipelineConfigResource], str]
    describe: Callable[[Message], DeadLetter]
    # row -> (topic, record) that puts the item back on its pending path
    replay_record: Callable[[dict[str, Any], PipelineConfigResource], tuple[str, OutRecord]]

    @property
    def table(self) -> str:
        return f"dlq_{self.name}"


def entry_for_source(message: Message) -> DeadLetter:
    """For DLQs that hold original records: the item is its source record (or, after a replay,
    the record it replays), named by its id field when the bytes parse as JSON."""
    headers = dict(message.headers() or [])
    errors = error_headers(message)
    replay_of = headers.get(REPLAY_OF_HEADER)
    entry_id = (replay_of or b"").decode() or f"{errors.get('topic')}:{errors.get('partition')}:{errors.get('offset')}"
    return DeadLetter(entry_id=entry_id, item_id=_json_field(message.value(), ("trace_id", "event_id")))


def _json_field(value: Optional[bytes], names: Sequence[str]) -> Optional[str]:
    try:
        document = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    return next((str(document[n]) for n in names if document.get(n) is not None), None)


def encode_headers(headers: Sequence[tuple[str, Optional[bytes]]]) -> str:
    return json.dumps([[k, (v or b"").hex()] for k, v in headers if not k.startswith(HEADER_PREFIX)])


def decode_headers(encoded: Optional[str]) -> list[tuple[str, bytes]]:
    return [(k, bytes.fromhex(v)) for k, v in json.loads(encoded or "[]")]


@dataclass
class DlqViewSink:
    """Dead-letter messages -> the view, merged on entry_id (newest dead letter wins)."""

    spec: DlqViewSpec
    counters: tuple[str, ...] = ("entries_updated",)

    @property
    def table(self) -> str:
        return self.spec.table

    @property
    def schema(self) -> pa.Schema:
        return VIEW_SCHEMA

    def rows_for(self, messages: Sequence[Message], context: BatchContext) -> pa.Table:
        now = datetime.now(timezone.utc)
        rows = []
        for message in messages:
            entry = self.spec.describe(message)
            errors = error_headers(message)
            seen = _timestamp(message)
            rows.append(
                {
                    "entry_id": entry.entry_id,
                    "item_id": entry.item_id,
                    "error_category": errors.get("category"),
                    "reason": errors.get("reason"),
                    "retry_count": entry.retry_count,
                    "first_seen": seen,
                    "last_seen": seen,
                    "source_topic": errors.get("topic"),
                    "source_partition": int(errors.get("partition", -1)),
                    "source_offset": int(errors.get("offset", -1)),
                    "payload": message.value(),
                    "payload_key": message.key(),
                    "payload_headers": encode_headers(message.headers() or []),
                    "status": WAITING,
                    "status_reason": None,
                    "status_changed_at": seen,
                    "status_run_id": context.run_id,
                    **lineage(message, context.ingestion_date, context.run_id, now),
                }
            )
        return pa.Table.from_pylist(rows, schema=VIEW_SCHEMA)

    def write(self, rows: pa.Table, table: DeltaTable, commit: CommitProperties, context: BatchContext) -> int:
        if rows.num_rows == 0:
            write_deltalake(table, rows, mode="append", partition_by=[PARTITION_COLUMN], commit_properties=commit)
            return 0
        latest = (
            pl.from_arrow(rows)
            .sort("last_seen")
            .group_by("entry_id", maintain_order=True)
            .agg(pl.all().last(), pl.col("first_seen").min().alias("_first"))
            .with_columns(pl.col("_first").alias("first_seen"))
            .drop("_first")
            .select(VIEW_SCHEMA.names)
        )
        refreshed = [c for c in VIEW_SCHEMA.names if c not in ("entry_id", "first_seen", PARTITION_COLUMN)]
        metrics = (
            table.merge(
                latest.to_arrow().cast(VIEW_SCHEMA),
                predicate="t.entry_id = s.entry_id",
                source_alias="s",
                target_alias="t",
                commit_properties=commit,
            )
            .when_matched_update(updates={c: f"s.{c}" for c in refreshed}, predicate="s.last_seen > t.last_seen")
            .when_not_matched_insert_all()
            .execute()
        )
        updated = int(metrics.get("num_target_rows_updated", 0))
        context.report.counts["entries_updated"] += updated
        return int(metrics.get("num_target_rows_inserted", 0)) + updated


def _timestamp(message: Message) -> datetime:
    _, millis = message.timestamp()
    return datetime.fromtimestamp(millis / 1000, timezone.utc) if millis and millis > 0 else datetime.now(timezone.utc)


# ---- operations -------------------------------------------------------------------------


@dataclass(frozen=True)
class DlqFilter:
    ids: tuple[str, ...] = ()  # entry ids or item ids
    error_category: Optional[str] = None
    seen_after: Optional[datetime] = None
    seen_before: Optional[datetime] = None
    statuses: tuple[str, ...] = (WAITING,)
    max_count: int = 100

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


def entries(lake: DeltaLakeResource, spec: DlqViewSpec, wanted: DlqFilter) -> pl.DataFrame:
    """The matching entries, oldest first, at most ``max_count``."""
    scan = lake.scan(spec.table)
    if scan is None:
        return pl.DataFrame(schema=pl.from_arrow(VIEW_SCHEMA.empty_table()).schema)
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


@dataclass
class OperationResult:
    operation: Operation
    entry_ids: list[str] = field(default_factory=list)
    outcome: str = "applied"
    replayed_to: dict[str, int] = field(default_factory=dict)


class RefusedOperation(Exception):
    pass


def replay(
    lake: DeltaLakeResource, kafka: KafkaResource, pipeline: PipelineConfigResource, spec: DlqViewSpec, op: Operation
) -> OperationResult:
    """Put matching entries back on their pending path (retry count reset) and mark them
    replayed. A dry run only lists them."""
    selected = entries(lake, spec, op.filters)
    result = OperationResult(op, selected["entry_id"].to_list(), outcome="dry_run" if op.dry_run else "applied")
    if not op.dry_run and selected.height:
        by_topic: dict[str, list[OutRecord]] = {}
        for row in selected.iter_rows(named=True):
            topic, record = spec.replay_record(row, pipeline)
            record = OutRecord(record.value, record.key, [*record.headers, (REPLAY_OF_HEADER, row["entry_id"].encode())])
            by_topic.setdefault(topic, []).append(record)
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


def _set_status(
    lake: DeltaLakeResource, spec: DlqViewSpec, entry_ids: Sequence[str], status: str, op: Operation, drop_payload: bool = False
) -> None:
    table = lake.load(spec.table)
    assert table is not None
    ids = ", ".join("'" + i.replace("'", "''") + "'" for i in entry_ids)
    updates = {
        "status": f"'{status}'",
        "status_reason": "'" + op.reason.replace("'", "''") + "'",
        "status_changed_at": "now()",
        "status_run_id": f"'{op.run_id}'",
    }
    if drop_payload:
        updates |= {"payload": "NULL", "payload_key": "NULL", "payload_headers": "NULL"}
    table.update(updates=updates, predicate=f"entry_id IN ({ids})")


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
        "at": datetime.now(timezone.utc),
    }
    table = lake.ensure(AUDIT_TABLE, AUDIT_SCHEMA, [])
    write_deltalake(table, pa.Table.from_pylist([row], schema=AUDIT_SCHEMA), mode="append")


# ---- health -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DlqHealth:
    waiting: int
    by_category: dict[str, int]
    oldest_age_s: Optional[float]
    new_per_minute: float  # entries first seen within the growth window, per minute


def health(lake: DeltaLakeResource, spec: DlqViewSpec, window: timedelta, now: Optional[datetime] = None) -> DlqHealth:
    now = now or datetime.now(timezone.utc)
    scan = lake.scan(spec.table)
    if scan is None:
        return DlqHealth(0, {}, None, 0.0)
    waiting = scan.filter(pl.col("status") == WAITING).select("error_category", "first_seen").collect()
    by_category = {str(k): int(v) for k, v in waiting.group_by("error_category").len().iter_rows()}
    oldest = waiting["first_seen"].min()
    recent = scan.filter(pl.col("first_seen") >= now - window).select(pl.len()).collect().item()
    return DlqHealth(
        waiting=waiting.height,
        by_category=by_category,
        oldest_age_s=(now - oldest).total_seconds() if oldest is not None else None,
        new_per_minute=recent / (window.total_seconds() / 60),
    )


# ---- the two kinds of dead-letter topic ---------------------------------------------------


def record_dlq(name: str, topic_of: Callable[[PipelineConfigResource], str]) -> DlqViewSpec:
    """A DLQ holding original records (bad events): replay re-sends the exact bytes, key and
    headers to the topic they came from."""

    return DlqViewSpec(name=name, topic_of=topic_of, describe=entry_for_source, replay_record=_resend_original)


def _resend_original(row: dict[str, Any], _: PipelineConfigResource) -> tuple[str, OutRecord]:
    """The exact bytes, key and headers, back to the topic they came from."""
    record = OutRecord(row["payload"] or b"", row["payload_key"], decode_headers(row["payload_headers"]))
    return row["source_topic"], record


def task_dlq(
    name: str,
    topic_of: Callable[[PipelineConfigResource], str],
    pending_of: Callable[[PipelineConfigResource], str],
    task_type: type,
) -> DlqViewSpec:
    """A DLQ holding failed tasks (downloads, enrichments): one entry per task key; replay puts
    the task back on its pending topic with its retry count reset (its history kept). The same
    topic also receives pending-topic messages that were no task at all (their original bytes):
    those are entries of their source record, and replay re-sends them as they were."""

    def failed_task(payload: Optional[bytes]) -> Optional[tuple[int, Any]]:
        try:
            failed = json.loads(payload or b"")
            return int(failed.get("retry_count", 0)), task_type.model_validate(failed["task"])
        except (ValueError, TypeError, KeyError, AttributeError):  # pydantic's ValidationError is a ValueError
            return None

    def describe(message: Message) -> DeadLetter:
        parsed = failed_task(message.value())
        if parsed is None:
            return entry_for_source(message)
        retry_count, task = parsed
        return DeadLetter(entry_id="|".join(task.key), item_id=task.key[0], retry_count=retry_count)

    def replay_record(row: dict[str, Any], pipeline: PipelineConfigResource) -> tuple[str, OutRecord]:
        parsed = failed_task(row["payload"])
        if parsed is None:
            return _resend_original(row, pipeline)
        task = parsed[1].model_copy(update={"retry_count": 0})
        return pending_of(pipeline), OutRecord(task.encode(), task.message_key)

    return DlqViewSpec(name=name, topic_of=topic_of, describe=describe, replay_record=replay_record)
