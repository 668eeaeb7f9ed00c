"""Attachments: download each task's file, upload it, and record it in a Delta inventory.

One failed attachment never fails the batch: it is routed to a retry topic or the DLQ
(before the commit that passes its offset). Only storage being unavailable fails the run.
Uploads go to deterministic paths, so a re-run after a crash overwrites rather than
duplicates, and the inventory is merged on its key, so it records each attachment once.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import polars as pl
import pyarrow as pa
from confluent_kafka import Message
from deltalake import CommitProperties, DeltaTable, write_deltalake

from pipeline_defs.lib.delta import DeltaLakeResource, scan_snapshot
from pipeline_defs.lib.dlq import RejectedRecord, SourceRecord, dead_letter
from pipeline_defs.lib.downloader import (
    AttachmentHttpResource,
    DownloadedFile,
    DownloadFailure,
    FailureCategory,
)
from pipeline_defs.lib.file_store import FileStore, FileStoreResource
from pipeline_defs.lib.kafka import OutRecord
from pipeline_defs.lib.kafka_to_delta import (
    LINEAGE_COLUMNS,
    PARTITION_COLUMN,
    BatchContext,
    IngestReport,
    commit_batch,
    dedup_window,
)
from pipeline_defs.lib.event_log import Topic
from pipeline_defs.lib.schemas.downloads import AttachmentTask, parse_task, route_failure

STORED_COLUMNS = pa.schema(
    [
        pa.field("blob_path", pa.string(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("file_type", pa.string(), nullable=False),
        pa.field("content_type", pa.string()),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("downloaded_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("uploaded_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("attempt_count", pa.int32(), nullable=False),
        pa.field("event_topic", pa.string()),
        pa.field("event_partition", pa.int32()),
        pa.field("event_offset", pa.int64()),
    ]
)


@dataclass(frozen=True)
class InventorySpec:
    """A domain's attachment inventory: its task type, key and domain columns."""

    table: str
    task_type: type[AttachmentTask]
    key_columns: tuple[str, ...]
    columns: pa.Schema  # domain columns, key columns first
    domain_row: Callable[[Any], dict[str, Any]]  # task -> domain columns

    @property
    def schema(self) -> pa.Schema:
        return pa.unify_schemas([self.columns, STORED_COLUMNS, LINEAGE_COLUMNS])


@dataclass(frozen=True)
class Stored:
    task: AttachmentTask
    carrier: Optional[SourceRecord]  # the Kafka record that carried the task, if any
    file: DownloadedFile
    blob_path: str
    uploaded_at: datetime


@dataclass(frozen=True)
class Failed:
    task: AttachmentTask
    carrier: Optional[SourceRecord]
    failure: DownloadFailure


@dataclass
class Retries:
    """Where failures go: one topic per retry delay, then the DLQ."""

    retry_topics: Sequence[tuple[str, int]]
    dead_letters: Topic


ATTACHMENT_COUNTERS = (
    "files_stored",
    "bytes_stored",
    "already_stored",
    "failed_transient",
    "failed_permanent",
    "failed_auth",
    "circuit_open",
    "retries_scheduled",
    "downloads_dead_lettered",
    "download_seconds",
)


@dataclass
class AttachmentInventorySink:
    spec: InventorySpec
    http: AttachmentHttpResource
    files: FileStoreResource
    retries: Retries
    counters: tuple[str, ...] = ATTACHMENT_COUNTERS
    breaker_transitions: list[str] = field(default_factory=list)

    @property
    def table(self) -> str:
        return self.spec.table

    @property
    def schema(self) -> pa.Schema:
        return self.spec.schema

    # ---- DeltaSink ----------------------------------------------------------------------
    def rows_for(self, messages: Sequence[Message], context: BatchContext) -> pa.Table:
        tasks: list[tuple[AttachmentTask, Optional[SourceRecord]]] = []
        rejected = []
        for message in messages:
            try:
                tasks.append((parse_task(self.spec.task_type, message), SourceRecord.of(message)))
            except RejectedRecord as rejection:
                context.report.rejected[rejection.category] += 1
                rejected.append(dead_letter(message, rejection, consumer_group=context.group_id, run_id=context.run_id))
        if rejected:
            self.retries.dead_letters.send(rejected)
        return self.process(tasks, context)

    def write(
        self, rows: pa.Table, table: DeltaTable, commit: CommitProperties, context: BatchContext
    ) -> int:
        if rows.num_rows == 0:  # nothing to merge, but the watermarks still move
            write_deltalake(table, rows, mode="append", partition_by=[PARTITION_COLUMN], commit_properties=commit)
            return 0
        days = ", ".join(f"'{d}'" for d in pl.from_arrow(rows)[PARTITION_COLUMN].unique().to_list())
        matches = " AND ".join(f"t.{c} = s.{c}" for c in self.spec.key_columns)
        metrics = (
            table.merge(
                rows,
                predicate=f"{matches} AND t.{PARTITION_COLUMN} IN ({days})",
                source_alias="s",
                target_alias="t",
                commit_properties=commit,
            )
            .when_not_matched_insert_all()
            .execute()
        )
        return int(metrics.get("num_target_rows_inserted", rows.num_rows))

    # ---- the work -----------------------------------------------------------------------
    def process(
        self, tasks: Sequence[tuple[AttachmentTask, Optional[SourceRecord]]], context: BatchContext
    ) -> pa.Table:
        """Download and upload what the inventory lacks, route failures, return new rows."""
        todo = self._not_yet_stored(tasks, context)
        started = time.monotonic()
        stored, failed = asyncio.run(self._fetch_and_store(todo))
        counts = context.report.counts
        counts["download_seconds"] += round(time.monotonic() - started, 3)
        self._route(failed, context)
        now = datetime.now(timezone.utc)
        rows = []
        for item in stored:
            counts["files_stored"] += 1
            counts["bytes_stored"] += item.file.size
            rows.append(self._row(item, context, now))
        return pa.Table.from_pylist(rows, schema=self.schema)

    def _not_yet_stored(
        self, tasks: Sequence[tuple[AttachmentTask, Optional[SourceRecord]]], context: BatchContext
    ) -> list[tuple[AttachmentTask, Optional[SourceRecord]]]:
        unique: dict[tuple[str, ...], tuple[AttachmentTask, Optional[SourceRecord]]] = {}
        for task, carrier in tasks:
            unique.setdefault(task.key, (task, carrier))
        known = self._known_keys([t for t, _ in unique.values()], context.table)
        context.report.counts["already_stored"] += len(tasks) - len(unique) + len(known & unique.keys())
        return [item for key, item in unique.items() if key not in known]

    def _known_keys(self, tasks: Sequence[AttachmentTask], table: Optional[DeltaTable]) -> set[tuple[str, ...]]:
        if not tasks or table is None:
            return set()
        days = {d for t in tasks for d in dedup_window(t.source.ingestion_date, 1)}
        keys = pl.DataFrame([dict(zip(self.spec.key_columns, t.key)) for t in tasks])
        found = (
            scan_snapshot(table)
            .filter(pl.col(PARTITION_COLUMN).is_in(sorted(days)))
            .select(self.spec.key_columns)
            .join(keys.lazy(), on=list(self.spec.key_columns), how="semi")
            .collect()
        )
        return {tuple(row) for row in found.iter_rows()}

    async def _fetch_and_store(
        self, tasks: Sequence[tuple[AttachmentTask, Optional[SourceRecord]]]
    ) -> tuple[list[Stored], list[Failed]]:
        stored: list[Stored] = []
        failed: list[Failed] = []
        if not tasks:
            return stored, failed
        with tempfile.TemporaryDirectory(prefix="attachments-", dir=self.http.settings.temp_dir) as temp:
            async with self.http.downloader(Path(temp)) as downloader, self.files.open() as store:
                async with asyncio.TaskGroup() as group:
                    for task, carrier in tasks:
                        group.create_task(self._one(task, carrier, downloader, store, stored, failed))
                self.breaker_transitions.extend(
                    f"{t.key}: {t.from_state.value} -> {t.to_state.value}" for t in downloader.breakers.transitions
                )
        return stored, failed

    async def _one(
        self,
        task: AttachmentTask,
        carrier: Optional[SourceRecord],
        downloader: Any,
        store: FileStore,
        stored: list[Stored],
        failed: list[Failed],
    ) -> None:
        result = await downloader.download(task.url)
        if isinstance(result, DownloadFailure):
            failed.append(Failed(task, carrier, result))
            return
        try:
            blob_path = task.blob_path(result.file_name)
            await store.upload(result.content, result.size, blob_path, result.content_type)
        finally:
            result.discard()
        stored.append(Stored(task, carrier, result, blob_path, datetime.now(timezone.utc)))

    def _route(self, failed: Sequence[Failed], context: BatchContext) -> None:
        counts = context.report.counts
        by_topic: dict[str, list[OutRecord]] = {}
        for item in failed:
            counts[_FAILURE_COUNTER[item.failure.category]] += 1
            topic, record = route_failure(
                item.task,
                item.failure,
                retry_topics=self.retries.retry_topics,
                dlq_topic=self.retries.dead_letters.name,
                carrier=item.carrier,
                consumer_group=context.group_id,
                run_id=context.run_id,
            )
            by_topic.setdefault(topic, []).append(record)
        for topic, records in by_topic.items():
            if topic == self.retries.dead_letters.name:
                counts["downloads_dead_lettered"] += len(records)
            else:
                counts["retries_scheduled"] += len(records)
            self.retries.dead_letters.kafka.produce(topic, records)

    def _row(self, item: Stored, context: BatchContext, now: datetime) -> dict[str, Any]:
        task, file = item.task, item.file
        return {
            **self.spec.domain_row(task),
            "blob_path": item.blob_path,
            "file_name": file.file_name,
            "file_type": file.extension,
            "content_type": file.content_type,
            "size_bytes": file.size,
            "sha256": file.sha256,
            "downloaded_at": file.downloaded_at,
            "uploaded_at": item.uploaded_at,
            "attempt_count": len(task.history) + 1,
            "event_topic": task.source.topic,
            "event_partition": task.source.partition,
            "event_offset": task.source.offset,
            **lineage_for(item, context, now),
        }


_FAILURE_COUNTER = {
    FailureCategory.TRANSIENT: "failed_transient",
    FailureCategory.PERMANENT: "failed_permanent",
    FailureCategory.AUTH: "failed_auth",
    FailureCategory.CIRCUIT_OPEN: "circuit_open",
}


def lineage_for(item: Stored, context: BatchContext, now: datetime) -> dict[str, Any]:
    """Lineage of the record that carried the task (the event itself for a backfill); the
    row's partition is its event's ingestion day, the same partition as in the event log."""
    source = item.carrier or SourceRecord(
        item.task.source.topic, item.task.source.partition, item.task.source.offset
    )
    return {
        "kafka_topic": source.topic,
        "kafka_partition": source.partition,
        "kafka_offset": source.offset,
        "kafka_timestamp": datetime.fromtimestamp(source.timestamp_ms / 1000, timezone.utc)
        if source.timestamp_ms > 0
        else None,
        "ingested_at": now,
        PARTITION_COLUMN: item.task.source.ingestion_date,
        "dagster_run_id": context.run_id,
    }



def repair_day(
    sink: AttachmentInventorySink,
    lake: DeltaLakeResource,
    context: BatchContext,
    *,
    events_table: str,
    event_columns: Sequence[str],
    tasks_from_events: Callable[[pl.DataFrame], Sequence[AttachmentTask]],
    batch_size: int,
) -> IngestReport:
    """A backfill: the attachments of the day's events that the inventory lacks, downloaded
    now (what is stored is skipped; failures retry or dead-letter as usual)."""
    report = context.report
    report.counts.update({name: 0 for name in sink.counters})
    table = context.table = lake.ensure(sink.table, sink.schema, [PARTITION_COLUMN])
    events = lake.scan(events_table)
    if events is not None:
        day_events = (
            events.filter(pl.col(PARTITION_COLUMN) == context.ingestion_date)
            .select(event_columns)
            .collect()
        )
        for chunk in day_events.iter_slices(batch_size):
            tasks = tasks_from_events(chunk)
            report.messages_read += len(tasks)
            rows = sink.process([(task, None) for task in tasks], context)
            report.rows_written += commit_batch(sink, table, rows, {}, context)
    report.delta_version = table.version()
    return report
