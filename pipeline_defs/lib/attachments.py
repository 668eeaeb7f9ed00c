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
from typing import Any, Callable, Optional, Protocol, Sequence

import polars as pl
import pyarrow as pa
from confluent_kafka import Message
from deltalake import CommitProperties, DeltaTable

from pipeline_defs.lib.delta import scan_snapshot
from pipeline_defs.lib.dlq import DeadLetterTopic, SourceRecord
from pipeline_defs.lib.downloader import AttachmentDownloader, AttachmentHttpResource, DownloadedFile
from pipeline_defs.lib.failures import FAILURE_COUNTERS, TaskFailure, failure_of
from pipeline_defs.lib.file_store import FileStore, FileStoreResource
from pipeline_defs.lib.guard import InfrastructureError, RejectedRecord, guarded, guarded_async
from pipeline_defs.lib.kafka_to_delta import merge_by_day
from pipeline_defs.lib.retries import Carried, Failed, Retries, task_lineage
from pipeline_defs.lib.schemas.downloads import AttachmentTask
from pipeline_defs.lib.schemas.tasks import parse_task
from pipeline_defs.lib.sink import LINEAGE_COLUMNS, PARTITION_COLUMN, BatchContext, RecordSink, dedup_window, table_from_rows

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


class UrlRefresher(Protocol):
    """Fresh download URLs for tasks whose presigned link expired (or that carry none yet)."""

    def is_stale(self, task: AttachmentTask, now: datetime) -> bool: ...

    async def refresh(self, tasks: Sequence[AttachmentTask]) -> dict[tuple[str, ...], AttachmentTask | TaskFailure]: ...


ATTACHMENT_COUNTERS = (
    "files_stored",
    "bytes_stored",
    "already_stored",
    "urls_refreshed",
    "failed_transient",
    "failed_permanent",
    "failed_auth",
    "circuit_open",
    "failed_unprocessable",
    "retries_scheduled",
    "downloads_dead_lettered",
    "download_seconds",
)

@dataclass
class AttachmentInventorySink(RecordSink[AttachmentTask]):
    spec: InventorySpec
    http: AttachmentHttpResource
    files: FileStoreResource
    retries: Retries
    refresher: Optional[UrlRefresher] = None  # for sources whose links expire (presigned URLs)
    counters: tuple[str, ...] = ATTACHMENT_COUNTERS
    breaker_transitions: list[str] = field(default_factory=list)

    stage = "read the task"

    @property
    def table(self) -> str:  # type: ignore[override]
        return self.spec.table

    @property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        return self.spec.schema

    # ---- RecordSink ---------------------------------------------------------------------
    def prepare(self, message: Message, context: BatchContext) -> AttachmentTask:
        return parse_task(self.spec.task_type, message)  # type: ignore[return-value]

    def finish(self, items: Sequence[tuple[Message, AttachmentTask]], context: BatchContext) -> pa.Table:
        return self.process([(task, SourceRecord.of(message)) for message, task in items], context)

    def dead_letter_topic(self) -> DeadLetterTopic:
        return self.retries.dead_letters

    def write(
        self, rows: pa.Table, table: DeltaTable, commit: CommitProperties, context: BatchContext
    ) -> int:
        return merge_by_day(table, rows, self.spec.key_columns, commit)

    # ---- the work -----------------------------------------------------------------------
    def process(self, tasks: Sequence[Carried], context: BatchContext) -> pa.Table:
        """Download and upload what the inventory lacks, route failures, return new rows."""
        todo = self._not_yet_stored(tasks, context)
        started = time.monotonic()
        stored, failed = asyncio.run(self._fetch_and_store(todo, context))
        counts = context.report.counts
        counts["download_seconds"] += round(time.monotonic() - started, 3)
        now = datetime.now(timezone.utc)
        built: list[tuple[Stored, dict[str, Any]]] = []
        for item in stored:
            row = guarded("build the inventory row", lambda: self._row(item, context, now))
            if isinstance(row, RejectedRecord):
                failed.append(Failed(item.task, item.carrier, failure_of(row)))
            else:
                built.append((item, row))
        rows, unfit = table_from_rows([row for _, row in built], [item for item, _ in built], self.schema, "build the inventory row")
        failed += [Failed(item.task, item.carrier, failure_of(rejection)) for item, rejection in unfit]
        for item in failed:
            counts[FAILURE_COUNTERS[item.failure.category]] += 1
        routed = self.retries.route(failed, context)
        counts["retries_scheduled"] += routed.retries_scheduled
        counts["downloads_dead_lettered"] += routed.dead_lettered
        counts["files_stored"] += rows.num_rows
        unfit_items = {id(item) for item, _ in unfit}
        counts["bytes_stored"] += sum(item.file.size for item, _ in built if id(item) not in unfit_items)
        return rows

    def _not_yet_stored(self, tasks: Sequence[Carried], context: BatchContext) -> list[Carried]:
        unique: dict[tuple[str, ...], Carried] = {}
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

    async def _fetch_and_store(self, tasks: Sequence[Carried], context: BatchContext) -> tuple[list[Stored], list[Failed]]:
        """Every task once. With a refresher, stale links are renewed before the download and a
        link the host reports expired is renewed and tried again; each link at most once."""
        stored: list[Stored] = []
        failed: list[Failed] = []
        if not tasks:
            return stored, failed
        now = datetime.now(timezone.utc)
        stale = {task.key for task, _ in tasks if self.refresher and self.refresher.is_stale(task, now)}
        renew = [item for item in tasks if item[0].key in stale]
        attempt = [item for item in tasks if item[0].key not in stale]
        renewed: set[tuple[str, ...]] = set()
        with tempfile.TemporaryDirectory(prefix="attachments-", dir=self.http.settings.temp_dir) as temp:
            async with self.http.downloader(Path(temp)) as downloader, self.files.open() as store:
                while attempt or renew:
                    fresh, refresh_failed = await self._refreshed(renew, context)
                    renewed |= {task.key for task, _ in renew}
                    failed += refresh_failed
                    done, failed_now = await self._attempt(attempt + fresh, downloader, store)
                    stored += done
                    renew = [(f.task, f.carrier) for f in failed_now if self._renewable(f, renewed)]
                    failed += [f for f in failed_now if not self._renewable(f, renewed)]
                    attempt = []
                self.breaker_transitions.extend(
                    f"{t.key}: {t.from_state.value} -> {t.to_state.value}" for t in downloader.breakers.transitions
                )
        return stored, failed

    def _renewable(self, failed: Failed, renewed: set[tuple[str, ...]]) -> bool:
        return self.refresher is not None and failed.failure.code == "expired_link" and failed.task.key not in renewed

    async def _refreshed(self, items: Sequence[Carried], context: BatchContext) -> tuple[list[Carried], list[Failed]]:
        if not items or self.refresher is None:
            return list(items), []
        fresh = await self.refresher.refresh([task for task, _ in items])
        ready, failed = [], []
        for task, carrier in items:
            outcome = fresh[task.key]
            if isinstance(outcome, TaskFailure):
                failed.append(Failed(task, carrier, outcome))
            else:
                ready.append((outcome, carrier))
        context.report.counts["urls_refreshed"] += len(ready)
        return ready, failed

    async def _attempt(
        self, items: Sequence[Carried], downloader: AttachmentDownloader, store: FileStore
    ) -> tuple[list[Stored], list[Failed]]:
        """Every task under the guard: one that breaks the code fails alone (unprocessable);
        storage failing fails the run."""
        stored: list[Stored] = []
        failed: list[Failed] = []

        async def one(task: AttachmentTask, carrier: Optional[SourceRecord]) -> None:
            outcome = await guarded_async("download and upload", lambda: self._one(task, downloader, store))
            if isinstance(outcome, RejectedRecord):
                failed.append(Failed(task, carrier, failure_of(outcome)))
            elif isinstance(outcome, TaskFailure):
                failed.append(Failed(task, carrier, outcome))
            else:
                stored.append(Stored(task, carrier, *outcome))

        try:
            async with asyncio.TaskGroup() as group:
                for task, carrier in items:
                    group.create_task(one(task, carrier))
        except* InfrastructureError as outage:
            raise outage.exceptions[0] from None
        return stored, failed

    @staticmethod
    async def _one(
        task: AttachmentTask, downloader: AttachmentDownloader, store: FileStore
    ) -> TaskFailure | tuple[DownloadedFile, str, datetime]:
        result = await downloader.download(task.url)
        if isinstance(result, TaskFailure):
            return result
        try:
            blob_path = task.blob_path(result.file_name)
            await store.upload(result.content, result.size, blob_path, result.content_type)
        finally:
            result.discard()
        return result, blob_path, datetime.now(timezone.utc)

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
            **task_lineage(task, item.carrier, context.run_id, now),
        }
