"""What a batch of Kafka messages becomes in one Delta table: the sink every Kafka-fed asset
uses, with the per-record guard built in.

``RecordSink.rows_for`` is the only way a sink sees messages: each one is ``prepare``d under
the guard, so a message that breaks the sink's code is rejected alone (dead-lettered by
default) and the batch goes on; ``finish`` then does the batch's work on what was prepared and
returns the rows to commit. Rows become Arrow in one go, and when one row does not fit its
schema, that row (not the batch) is rejected.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import Enum
from typing import Any, Generic, Optional, Protocol, TypeVar

import pyarrow as pa
from confluent_kafka import Message
from deltalake import CommitProperties, DeltaTable

from pipeline_defs.lib.dlq.records import DeadLetterTopic, SourceRecord, dead_letter, dead_letter_record
from pipeline_defs.lib.ingest.guard import RejectedRecord, guarded
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.settings import StreamSettings
from pipeline_defs.lib.validation.timestamps import from_epoch_ms

PARTITION_COLUMN = "ingestion_date"
TopicPartitionKey = tuple[str, int]

LINEAGE_COLUMNS = pa.schema(
    [
        pa.field("kafka_topic", pa.string(), nullable=False),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("kafka_timestamp", pa.timestamp("us", tz="UTC")),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field(PARTITION_COLUMN, pa.date32(), nullable=False),
        pa.field("dagster_run_id", pa.string(), nullable=False),
    ]
)


class IngestMode(Enum):
    STREAM = "stream"  # sensor-planned ranges: watermark-guarded
    BACKFILL = "backfill"  # re-read to repair gaps: key-deduplicated, watermarks untouched


@dataclass
class IngestReport:
    planned: list[OffsetRange] = field(default_factory=list)
    read: list[OffsetRange] = field(default_factory=list)
    messages_read: int = 0
    rows_written: int = 0
    already_committed: int = 0
    lost_to_retention: int = 0
    commit_conflicts: int = 0
    rejected: Counter = field(default_factory=Counter)  # dead-lettered records by category
    counts: Counter = field(default_factory=Counter)  # sink-specific tallies
    delta_version: Optional[int] = None
    watermarks: dict[TopicPartitionKey, int] = field(default_factory=dict)
    offsets_above_log_end: dict[TopicPartitionKey, int] = field(default_factory=dict)

    @property
    def dead_lettered(self) -> int:
        return sum(self.rejected.values())


@dataclass
class BatchContext:
    group_id: str
    run_id: str
    ingestion_date: date
    mode: IngestMode
    report: IngestReport
    log: Any = field(default_factory=lambda: logging.getLogger(__name__))
    table: Optional[DeltaTable] = None  # the sink's table, kept at the batch's snapshot


def lineage(message: Message, ingestion_date: date, run_id: str, now: datetime) -> dict[str, Any]:
    _, timestamp_ms = message.timestamp()
    return {
        "kafka_topic": message.topic(),
        "kafka_partition": message.partition(),
        "kafka_offset": message.offset(),
        "kafka_timestamp": from_epoch_ms(timestamp_ms),
        "ingested_at": now,
        PARTITION_COLUMN: ingestion_date,
        "dagster_run_id": run_id,
    }


def dedup_window(day: date, days: int) -> list[date]:
    return [day + timedelta(days=offset) for offset in range(-days, days + 1)]


Item = TypeVar("Item")


class TableSpec(Protocol):
    """The Delta table a sink writes: its name and its schema."""

    @property
    def table(self) -> str: ...

    @property
    def schema(self) -> pa.Schema: ...


@dataclass(frozen=True)
class DeltaTableSpec:
    table: str
    schema: pa.Schema


class RecordSink(ABC, Generic[Item]):
    """A Delta table fed by Kafka records, one guarded record at a time."""

    spec: TableSpec
    counters: tuple[str, ...] = ()  # sink-specific tallies, reported even when zero
    stage: str = "prepare the record"  # names the per-record stage in unprocessable reasons

    @property
    def table(self) -> str:
        return self.spec.table

    @property
    def schema(self) -> pa.Schema:
        return self.spec.schema

    @abstractmethod
    def prepare(self, message: Message, context: BatchContext) -> Item:
        """Per record, under the guard: raise ``RejectedRecord`` (or anything) to reject it."""

    @abstractmethod
    def finish(self, items: Sequence[tuple[Message, Item]], context: BatchContext) -> pa.Table:
        """The batch's work on the prepared records; side effects happen here, once. Per-item
        work in here runs under ``guarded`` too."""

    @abstractmethod
    def write(self, rows: pa.Table, table: DeltaTable, commit: CommitProperties, context: BatchContext) -> int:
        """One commit attempt against ``table``'s snapshot; returns the rows committed."""

    def dead_letter_topic(self) -> Optional[DeadLetterTopic]:
        """Where rejected records go; ``None`` for a sink that keeps them as rows itself."""
        return None

    def micro_batch_wait_s(self, stream: StreamSettings) -> float:
        """How long a streaming micro-batch for this sink gathers records before its commit."""
        return stream.batch_max_wait_s

    def rows_for(self, messages: Sequence[Message], context: BatchContext) -> pa.Table:
        prepared: list[tuple[Message, Item]] = []
        rejected: list[tuple[Message, RejectedRecord]] = []
        for message in messages:
            outcome = guarded(self.stage, self.prepare, message, context)
            if isinstance(outcome, RejectedRecord):
                rejected.append((message, outcome))
            else:
                prepared.append((message, outcome))
        self.reject(rejected, context)
        return self.finish(prepared, context)

    def reject(self, rejected: Sequence[tuple[Message, RejectedRecord]], context: BatchContext) -> None:
        """Dead-letter ``rejected`` (streaming only: a backfill re-reads what was dead-lettered)."""
        for _, rejection in rejected:
            context.report.rejected[rejection.category] += 1
        topic = self.dead_letter_topic()
        if rejected and topic is not None and context.mode is IngestMode.STREAM:
            topic.send(dead_letter_of(m, r, context) for m, r in rejected)


def dead_letter_of(message: Message, rejection: RejectedRecord, context: BatchContext) -> OutRecord:
    """The message's dead letter; if even that cannot be built, its bare value with the reason."""
    record = guarded("build the dead letter", dead_letter, message, rejection, context.group_id, context.run_id)
    if not isinstance(record, RejectedRecord):
        return record
    return dead_letter_record(
        value=message.value() or b"",
        key=None,
        source=SourceRecord(message.topic() or "", message.partition() or 0, message.offset() or 0),
        category=rejection.category,
        reason=f"{rejection.reason}; {record.reason}",
        consumer_group=context.group_id,
        run_id=context.run_id,
    )


Owner = TypeVar("Owner")


def table_from_rows(
    rows: Sequence[dict[str, Any]], owners: Sequence[Owner], schema: pa.Schema, stage: str
) -> tuple[pa.Table, list[tuple[Owner, RejectedRecord]]]:
    """``rows`` as Arrow; a row that does not fit ``schema`` is left out and its owner (the
    record it came from) returned with the reason, instead of failing the whole batch."""
    whole = guarded(stage, pa.Table.from_pylist, list(rows), schema)
    if not isinstance(whole, RejectedRecord):
        return whole, []
    kept: list[dict[str, Any]] = []
    rejected: list[tuple[Owner, RejectedRecord]] = []
    for row, owner in zip(rows, owners):
        outcome = guarded(stage, _one_row_table, row, schema)
        if isinstance(outcome, RejectedRecord):
            rejected.append((owner, outcome))
        else:
            kept.append(row)
    return pa.Table.from_pylist(kept, schema=schema), rejected


def _one_row_table(row: dict[str, Any], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([row], schema=schema)
