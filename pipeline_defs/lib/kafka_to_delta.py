"""Kafka offset ranges into a Delta table, exactly once in effect.

Per table and Kafka partition, a Delta app transaction (``txn``) records the next offset not
yet committed: the *watermark*. A streaming run reads from the watermark to the end of its
planned range, so re-executing a run, or a range that overlaps an earlier one, reads nothing
twice; a range planned after a lost run fills the gap. Rows are also deduplicated on the
sink's key within a window of ingestion dates, which removes duplicates the source itself sent.
Every commit carries a ``writer:<table>`` txn too, so delta-rs rejects concurrent writers
(``CommitFailedError``) and Dagster's RetryPolicy re-runs the loser against the new snapshot.

Records that cannot be used go to a dead-letter topic before the commit that passes them.
Consumer-group offsets are committed last, so lag tools show progress but never lead it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import polars as pl
import pyarrow as pa
from confluent_kafka import Message
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from pipeline_defs.lib.delta import DeltaLakeResource, scan_snapshot
from pipeline_defs.lib.dlq import RejectedRecord, dead_letter
from pipeline_defs.lib.kafka import KafkaResource, ReadStats
from pipeline_defs.lib.offset_ranges import OffsetRange

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
    STREAM = "stream"  # sensor-planned ranges: watermark-guarded, dead-letters rejects
    BACKFILL = "backfill"  # re-read to repair gaps: key-deduplicated, watermark untouched


@dataclass(frozen=True)
class KafkaDeltaSink:
    """How one topic lands in one Delta table."""

    table: str
    columns: pa.Schema
    to_row: Callable[[Message], dict[str, Any]]
    key_columns: tuple[str, ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.unify_schemas([self.columns, LINEAGE_COLUMNS])


def watermark_app_id(group_id: str, topic: str, partition: int) -> str:
    return f"kafka:{group_id}:{topic}:{partition}"


def writer_app_id(table: str) -> str:
    return f"writer:{table}"


@dataclass
class IngestReport:
    planned: list[OffsetRange] = field(default_factory=list)
    read: list[OffsetRange] = field(default_factory=list)
    messages_read: int = 0
    rows_written: int = 0
    duplicates_skipped: int = 0
    already_committed: int = 0
    lost_to_retention: int = 0
    rejected: Counter = field(default_factory=Counter)
    delta_version: Optional[int] = None
    watermarks: dict[TopicPartitionKey, int] = field(default_factory=dict)

    @property
    def dead_lettered(self) -> int:
        return sum(self.rejected.values())


def ingest_ranges(
    planned: Sequence[OffsetRange],
    *,
    sink: KafkaDeltaSink,
    source: KafkaResource,
    lake: DeltaLakeResource,
    group_id: str,
    ingestion_date: date,
    run_id: str,
    mode: IngestMode = IngestMode.STREAM,
    dead_letters: Optional[KafkaResource] = None,
    dlq_topic: Optional[str] = None,
    dedup_window_days: int = 1,
    batch_size: int = 50_000,
    read_timeout_s: float = 300,
    log: logging.Logger = logging.getLogger(__name__),
) -> IngestReport:
    report = IngestReport(planned=list(planned))
    table = lake.ensure(sink.table, sink.schema, [PARTITION_COLUMN])
    if mode is IngestMode.STREAM:
        marks = _watermarks(table, planned, source, group_id)
        to_read = [
            OffsetRange(r.topic, r.partition, marks[(r.topic, r.partition)], r.end)
            for r in planned
            if marks[(r.topic, r.partition)] < r.end
        ]
        report.already_committed = sum(
            min(r.end, marks[(r.topic, r.partition)]) - r.start
            for r in planned
            if marks[(r.topic, r.partition)] > r.start
        )
    else:
        to_read = list(planned)
    report.read = to_read
    window = dedup_window(ingestion_date, dedup_window_days)
    stats = ReadStats()

    for messages in source.read_ranges(to_read, group_id, batch_size, read_timeout_s, stats):
        table.update_incremental()  # the snapshot this chunk reads, dedups and commits against
        if mode is IngestMode.STREAM:
            messages = _not_yet_committed(messages, table, group_id, report)
        rows, rejects = _split(messages, sink)
        for rejection in rejects.values():
            report.rejected[rejection.category] += 1
        if rejects and mode is IngestMode.STREAM:
            _dead_letter(rejects, messages, dead_letters, dlq_topic, group_id, run_id)
        batch = _with_lineage(rows, sink, ingestion_date, run_id)
        fresh = _drop_known_keys(batch, table, sink, window)
        report.duplicates_skipped += batch.num_rows - fresh.num_rows
        positions = _next_offsets(messages) if mode is IngestMode.STREAM else {}
        _commit(sink, table, fresh, group_id, positions, run_id)
        report.rows_written += fresh.num_rows
        report.watermarks.update(positions)
        log.info(
            f"{sink.table}: {len(messages)} messages -> {fresh.num_rows} rows, "
            f"{batch.num_rows - fresh.num_rows} duplicates, {len(rejects)} dead-lettered"
        )

    report.messages_read = stats.messages
    report.lost_to_retention = stats.lost_to_retention
    if mode is IngestMode.STREAM and to_read:
        _close_ranges(sink, table, group_id, to_read, run_id, report)
        source.commit_offsets(group_id, {(r.topic, r.partition): r.end for r in to_read})
    report.delta_version = table.version()
    return report


def _watermarks(
    table: DeltaTable,
    planned: Sequence[OffsetRange],
    source: KafkaResource,
    group_id: str,
) -> dict[TopicPartitionKey, int]:
    """Next uncommitted offset per partition. A partition this table has never seen starts
    at the group's committed offset, else at the log start, never at the planned start: a
    later range running first must not hide an earlier one."""
    found: dict[TopicPartitionKey, int] = {}
    unseen: dict[str, list[int]] = {}
    for r in planned:
        app_id = watermark_app_id(group_id, r.topic, r.partition)
        version = table.transaction_version(app_id)
        if version is None:
            unseen.setdefault(r.topic, []).append(r.partition)
        else:
            found[(r.topic, r.partition)] = version
    timeout = source.connection.request_timeout_s
    for topic, partitions in unseen.items():
        committed = source.committed_offsets(group_id, topic, partitions, timeout)
        if len(committed) < len(partitions):
            states = source.partition_states(topic, timeout)
            committed = {p: committed.get(p, states[p].low) for p in partitions}
        found.update({(topic, p): committed[p] for p in partitions})
    return found


def _not_yet_committed(
    messages: list[Message], table: DeltaTable, group_id: str, report: IngestReport
) -> list[Message]:
    """Drop messages another writer committed since this run read its watermarks."""
    marks: dict[TopicPartitionKey, int] = {}
    kept = []
    for m in messages:
        key = (m.topic(), m.partition())
        if key not in marks:
            marks[key] = table.transaction_version(watermark_app_id(group_id, *key)) or -1
        if m.offset() >= marks[key]:
            kept.append(m)
    report.already_committed += len(messages) - len(kept)
    return kept


def _split(
    messages: Iterable[Message], sink: KafkaDeltaSink
) -> tuple[list[tuple[Message, dict[str, Any]]], dict[int, RejectedRecord]]:
    rows: list[tuple[Message, dict[str, Any]]] = []
    rejects: dict[int, RejectedRecord] = {}
    for index, message in enumerate(messages):
        try:
            rows.append((message, sink.to_row(message)))
        except RejectedRecord as rejection:
            rejects[index] = rejection
    return rows, rejects


def _dead_letter(
    rejects: Mapping[int, RejectedRecord],
    messages: Sequence[Message],
    dead_letters: Optional[KafkaResource],
    dlq_topic: Optional[str],
    group_id: str,
    run_id: str,
) -> None:
    if dead_letters is None or not dlq_topic:
        raise ValueError("rejected records need a dead-letter topic")
    dead_letters.produce(
        dlq_topic,
        (
            dead_letter(messages[i], rejection, consumer_group=group_id, run_id=run_id)
            for i, rejection in rejects.items()
        ),
    )


def _with_lineage(
    rows: Sequence[tuple[Message, dict[str, Any]]],
    sink: KafkaDeltaSink,
    ingestion_date: date,
    run_id: str,
) -> pa.Table:
    now = datetime.now(timezone.utc)
    records = []
    for message, row in rows:
        _, timestamp_ms = message.timestamp()
        records.append(
            {
                **row,
                "kafka_topic": message.topic(),
                "kafka_partition": message.partition(),
                "kafka_offset": message.offset(),
                "kafka_timestamp": datetime.fromtimestamp(timestamp_ms / 1000, timezone.utc)
                if timestamp_ms and timestamp_ms > 0
                else None,
                "ingested_at": now,
                PARTITION_COLUMN: ingestion_date,
                "dagster_run_id": run_id,
            }
        )
    return pa.Table.from_pylist(records, schema=sink.schema)


def dedup_window(day: date, days: int) -> list[date]:
    return [day + timedelta(days=offset) for offset in range(-days, days + 1)]


def _drop_known_keys(
    batch: pa.Table, table: DeltaTable, sink: KafkaDeltaSink, window: list[date]
) -> pa.Table:
    """Keep the first row of each key in the batch, minus keys already in the window."""
    if batch.num_rows == 0:
        return batch
    keys = list(sink.key_columns)
    frame = pl.from_arrow(batch).unique(subset=keys, keep="first", maintain_order=True)
    known = (
        scan_snapshot(table)
        .filter(pl.col(PARTITION_COLUMN).is_in(window))
        .select(keys)
        .join(frame.lazy().select(keys), on=keys, how="semi")
        .collect()
    )
    if known.height:
        frame = frame.join(known, on=keys, how="anti", maintain_order="left")
    return frame.to_arrow().cast(sink.schema)


def _next_offsets(messages: Iterable[Message]) -> dict[TopicPartitionKey, int]:
    positions: dict[TopicPartitionKey, int] = {}
    for m in messages:
        key = (m.topic(), m.partition())
        positions[key] = max(positions.get(key, 0), m.offset() + 1)
    return positions


def _commit(
    sink: KafkaDeltaSink,
    table: DeltaTable,
    batch: pa.Table,
    group_id: str,
    positions: Mapping[TopicPartitionKey, int],
    run_id: str,
) -> None:
    """Append against ``table``'s snapshot; a concurrent commit raises ``CommitFailedError``."""
    if batch.num_rows == 0 and not positions:
        return
    txns = [Transaction(watermark_app_id(group_id, t, p), o) for (t, p), o in positions.items()]
    txns.append(Transaction(writer_app_id(sink.table), table.version() + 1))
    write_deltalake(
        table,
        batch,
        mode="append",
        partition_by=[PARTITION_COLUMN],
        schema_mode="merge",
        commit_properties=CommitProperties(
            app_transactions=txns,
            custom_metadata={"dagster_run_id": run_id, "writer": "kafka_to_delta"},
        ),
    )
    table.update_incremental()


def _close_ranges(
    sink: KafkaDeltaSink,
    table: DeltaTable,
    group_id: str,
    ranges: Sequence[OffsetRange],
    run_id: str,
    report: IngestReport,
) -> None:
    """Move watermarks to the range ends: offsets past the last message (transaction
    markers, compaction gaps) belong to the range too."""
    table.update_incremental()
    behind = {
        (r.topic, r.partition): r.end
        for r in ranges
        if (table.transaction_version(watermark_app_id(group_id, r.topic, r.partition)) or -1)
        < r.end
    }
    _commit(sink, table, sink.schema.empty_table(), group_id, behind, run_id)
    report.watermarks.update({(r.topic, r.partition): r.end for r in ranges})
