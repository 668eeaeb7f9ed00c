"""Kafka offset ranges into a Delta table, exactly once in effect.

Per table and Kafka partition, a Delta app transaction (``txn``) records the next offset not
yet committed: the *watermark*. A streaming run reads from the watermark to the end of its
planned range, so re-executing a run, or a range that overlaps an earlier one, reads nothing
twice; a range planned after a lost run fills the gap. Every commit also carries a
``writer:<table>`` txn, so delta-rs rejects a concurrent writer (``CommitFailedError``); the
loser reloads the snapshot, drops what the winner committed and tries again.

What a batch becomes is the sink's business (``RecordSink``): it turns messages into rows once,
doing its side effects there (dead letters, downloads, retries), before the commit that passes
those offsets. Consumer-group offsets are committed last, so lag tools never lead the data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import polars as pl
import pyarrow as pa
from confluent_kafka import Message
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from pipeline_defs.lib.delta.resource import DeltaLakeResource, as_frame, retry_on_commit_conflict
from pipeline_defs.lib.ingest.guard import RejectedRecord, guarded
from pipeline_defs.lib.ingest.sink import PARTITION_COLUMN, BatchContext, IngestMode, IngestReport, RecordSink, TopicPartitionKey
from pipeline_defs.lib.ingest.tasks import RetryableTask, TaskSink
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import ReadStats, position
from pipeline_defs.lib.kafka.resource import KafkaResource


def watermark_app_id(group_id: str, topic: str, partition: int) -> str:
    return f"kafka:{group_id}:{topic}:{partition}"


def writer_app_id(table: str) -> str:
    return f"writer:{table}"


def consume_ranges(
    planned: Sequence[OffsetRange],
    *,
    sink: RecordSink,
    source: KafkaResource,
    lake: DeltaLakeResource,
    context: BatchContext,
    batch_size: int = 50_000,
    read_timeout_s: float = 300,
) -> IngestReport:
    """Read ``planned`` from ``source`` and commit what ``sink`` makes of it."""
    report = context.report
    report.planned = list(planned)
    report.counts.update({name: 0 for name in sink.counters})
    table = context.table = lake.ensure(sink.table, sink.schema, [PARTITION_COLUMN])
    streaming = context.mode is IngestMode.STREAM
    to_read = _unread(table, planned, source, context.group_id, report) if streaming else list(planned)
    report.read = to_read
    stats = ReadStats()

    for messages in source.read_ranges(to_read, context.group_id, batch_size, read_timeout_s, stats):
        table.update_incremental()
        if streaming:
            messages = not_yet_committed(messages, table, context.group_id, report)
        rows = sink.rows_for(messages, context)
        positions = next_offsets(messages) if streaming else {}
        report.rows_written += commit_batch(sink, table, rows, positions, context)
        report.watermarks.update(positions)

    report.messages_read = stats.messages
    report.lost_to_retention = stats.lost_to_retention
    if streaming and to_read:
        ends = {(r.topic, r.partition): r.end for r in to_read}
        commit_batch(sink, table, sink.schema.empty_table(), ends, context)
        report.watermarks.update(ends)
        source.commit_offsets(context.group_id, ends)
    report.delta_version = table.version()
    return report


def merge_by_day(
    table: DeltaTable,
    rows: pa.Table,
    keys: Sequence[str],
    commit: CommitProperties,
    update_when: Optional[str] = None,
) -> int:
    """MERGE ``rows`` on ``keys`` within the ingestion days they cover (so only those partitions
    are read); a matched row is replaced where ``update_when`` holds, never if it is None. An
    empty batch still commits, so the watermarks in ``commit`` move. Returns rows written."""
    if rows.num_rows == 0:
        write_deltalake(table, rows, mode="append", partition_by=[PARTITION_COLUMN], commit_properties=commit)
        return 0
    days = ", ".join(f"'{d}'" for d in as_frame(rows)[PARTITION_COLUMN].unique().to_list())
    matches = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    merger = table.merge(
        rows,
        predicate=f"{matches} AND t.{PARTITION_COLUMN} IN ({days})",
        source_alias="s",
        target_alias="t",
        commit_properties=commit,
    )
    if update_when is not None:
        merger = merger.when_matched_update_all(predicate=update_when)
    metrics = merger.when_not_matched_insert_all().execute()
    return int(metrics.get("num_target_rows_inserted", 0)) + int(metrics.get("num_target_rows_updated", 0))


def commit_batch(
    sink: RecordSink,
    table: DeltaTable,
    rows: pa.Table,
    positions: Mapping[TopicPartitionKey, int],
    context: BatchContext,
) -> int:
    """Commit ``rows`` and move the watermarks to ``positions``, retrying on conflicts with
    other writers: each attempt re-reads the snapshot and keeps only what is still missing."""

    @retry_on_commit_conflict
    def attempt() -> int:
        table.update_incremental()
        marks = {k: table.transaction_version(watermark_app_id(context.group_id, *k)) or -1 for k in positions}
        advancing = {k: p for k, p in positions.items() if p > marks[k]}
        pending = _below_watermarks(rows, marks)
        if pending.num_rows == 0 and not advancing:
            return 0
        txns = [Transaction(watermark_app_id(context.group_id, t, p), o) for (t, p), o in advancing.items()]
        txns.append(Transaction(writer_app_id(sink.table), table.version() + 1))
        commit = CommitProperties(
            app_transactions=txns,
            custom_metadata={"dagster_run_id": context.run_id, "writer": "kafka_to_delta"},
        )
        try:
            return sink.write(pending, table, commit, context)
        except CommitFailedError:
            context.report.commit_conflicts += 1
            raise

    return attempt()


def _below_watermarks(rows: pa.Table, marks: Mapping[TopicPartitionKey, int]) -> pa.Table:
    """Drop rows whose source offset another writer has committed meanwhile."""
    if rows.num_rows == 0 or not marks:
        return rows
    frame = as_frame(rows)
    committed = pl.DataFrame(
        {
            "kafka_topic": [t for t, _ in marks],
            "kafka_partition": pl.Series([p for _, p in marks], dtype=pl.Int32),
            "_mark": list(marks.values()),
        }
    )
    kept = (
        frame.join(committed, on=["kafka_topic", "kafka_partition"], how="left")
        .filter(pl.col("_mark").is_null() | (pl.col("kafka_offset") >= pl.col("_mark")))
        .drop("_mark")
    )
    return rows if kept.height == frame.height else kept.to_arrow().cast(rows.schema)


def _unread(
    table: DeltaTable,
    planned: Sequence[OffsetRange],
    source: KafkaResource,
    group_id: str,
    report: IngestReport,
) -> list[OffsetRange]:
    marks = watermarks(table, planned, source, group_id)
    behind = {r.topic for r in planned if marks[(r.topic, r.partition)] > r.end}
    for topic in behind:  # a watermark past the log end: the topic was recreated or truncated
        states = source.partition_states(topic, source.connection.request_timeout_s)
        report.offsets_above_log_end.update(
            {(topic, p): mark for (t, p), mark in marks.items() if t == topic and p in states and mark > states[p].high}
        )
    report.already_committed = sum(
        min(r.end, marks[(r.topic, r.partition)]) - r.start for r in planned if marks[(r.topic, r.partition)] > r.start
    )
    return [
        OffsetRange(r.topic, r.partition, marks[(r.topic, r.partition)], r.end)
        for r in planned
        if marks[(r.topic, r.partition)] < r.end
    ]


def watermarks(
    table: Optional[DeltaTable],
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
        version = None if table is None else table.transaction_version(watermark_app_id(group_id, r.topic, r.partition))
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


def stream_positions(
    table: Optional[DeltaTable], topic: str, partitions: Sequence[int], source: KafkaResource, group_id: str
) -> dict[int, int]:
    """Per partition, where the stream will read next: offsets below were ingested (or
    dead-lettered) by sensor runs, offsets from here on will be."""
    marks = watermarks(table, [OffsetRange(topic, p, 0, 0) for p in partitions], source, group_id)
    return {p: marks[(topic, p)] for p in partitions}


def not_yet_committed(messages: list[Message], table: DeltaTable, group_id: str, report: IngestReport) -> list[Message]:
    """Drop messages another writer committed since this run read its watermarks."""
    marks: dict[TopicPartitionKey, int] = {}
    kept = []
    for m in messages:
        topic, partition, offset = position(m)
        key = (topic, partition)
        if key not in marks:
            marks[key] = table.transaction_version(watermark_app_id(group_id, topic, partition)) or -1
        if offset >= marks[key]:
            kept.append(m)
    report.already_committed += len(messages) - len(kept)
    return kept


def next_offsets(messages: Sequence[Message]) -> dict[TopicPartitionKey, int]:
    positions: dict[TopicPartitionKey, int] = {}
    for m in messages:
        topic, partition, offset = position(m)
        positions[(topic, partition)] = max(positions.get((topic, partition), 0), offset + 1)
    return positions


def repair_day(
    sink: TaskSink[Any],
    lake: DeltaLakeResource,
    context: BatchContext,
    *,
    events_table: str,
    event_columns: Sequence[str],
    tasks_of_event: Callable[[dict[str, Any]], Sequence[Any]],
    batch_size: int,
) -> IngestReport:
    """A backfill: the tasks of the day's rows of ``events_table``; the sink skips what is
    already done, failures retry or dead-letter as usual. Watermarks stay put. A row whose
    tasks cannot be built is counted (``unprocessable_rows``) and logged; the rest go on."""
    report = context.report
    report.counts.update({name: 0 for name in sink.counters})
    table = context.table = lake.ensure(sink.table, sink.schema, [PARTITION_COLUMN])
    events = lake.scan(events_table)
    if events is not None:
        day_events = events.filter(pl.col(PARTITION_COLUMN) == context.ingestion_date).select(event_columns).collect()
        for chunk in day_events.iter_slices(batch_size):
            tasks: list[RetryableTask] = []
            for index in range(chunk.height):
                built = guarded("build the event's tasks", _tasks_of_row, tasks_of_event, chunk, index)
                if isinstance(built, RejectedRecord):
                    report.counts["unprocessable_rows"] += 1
                    context.log.warning(f"{events_table} row {index} of the day: {built.reason}")
                else:
                    tasks += built
            report.messages_read += len(tasks)
            rows = sink.process([(task, None) for task in tasks], context)
            report.rows_written += commit_batch(sink, table, rows, {}, context)
    report.delta_version = table.version()
    return report


def _tasks_of_row(tasks_of_event: Callable[[dict[str, Any]], Sequence[Any]], day: pl.DataFrame, index: int) -> Sequence[Any]:
    return tasks_of_event(day.row(index, named=True))
