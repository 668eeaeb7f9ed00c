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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import dagster as dg
import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable

from pipeline_defs.lib.attachments.bodies import DownloadedFile
from pipeline_defs.lib.attachments.downloader import AttachmentDownloader, AttachmentHttpResource
from pipeline_defs.lib.attachments.file_store import FileStore, FileStoreResource
from pipeline_defs.lib.attachments.tables import ATTACHMENT_COUNTERS, InventorySpec, Stored, UrlRefresher
from pipeline_defs.lib.attachments.tasks import AttachmentTask
from pipeline_defs.lib.delta.checks import RunScope, inventory_checks
from pipeline_defs.lib.delta.resource import DeltaLakeResource, scan_snapshot
from pipeline_defs.lib.dlq.records import DeadLetterTopic, SourceRecord
from pipeline_defs.lib.ingest.consume import merge_by_day
from pipeline_defs.lib.ingest.failures import FAILURE_COUNTERS, TaskFailure, failure_of
from pipeline_defs.lib.ingest.feeds import KafkaFeed
from pipeline_defs.lib.ingest.guard import InfrastructureError, RejectedRecord, guarded, guarded_async
from pipeline_defs.lib.ingest.retries import Failed, Retries, task_lineage
from pipeline_defs.lib.ingest.runs import RepairSource, TaskRun, TaskTopics, ingest_metadata, work_tasks
from pipeline_defs.lib.ingest.sink import (
    PARTITION_COLUMN,
    BatchContext,
    IngestMode,
    IngestReport,
    dedup_window,
    table_from_rows,
)
from pipeline_defs.lib.ingest.tasks import Carried, TaskSink
from pipeline_defs.lib.settings import IngestConfigResource


@dataclass
class AttachmentInventorySink(TaskSink[AttachmentTask]):
    spec: InventorySpec
    http: AttachmentHttpResource
    files: FileStoreResource
    retries: Retries
    refresher: Optional[UrlRefresher] = None  # for sources whose links expire (presigned URLs)
    counters: tuple[str, ...] = ATTACHMENT_COUNTERS
    breaker_transitions: list[str] = field(default_factory=list)

    stage = "read the task"

    # ---- RecordSink ---------------------------------------------------------------------
    @property
    def task_type(self) -> type[AttachmentTask]:
        return self.spec.task_type

    def dead_letter_topic(self) -> DeadLetterTopic:
        return self.retries.dead_letters

    def write(self, rows: pa.Table, table: DeltaTable, commit: CommitProperties, context: BatchContext) -> int:
        return merge_by_day(table, rows, self.spec.key_columns, commit)

    # ---- the work -----------------------------------------------------------------------
    def process(self, tasks: Sequence[Carried[AttachmentTask]], context: BatchContext) -> pa.Table:
        """Download and upload what the inventory lacks, route failures, return new rows."""
        todo = self._not_yet_stored(tasks, context)
        started = time.monotonic()
        stored, failed = asyncio.run(self._fetch_and_store(todo, context))
        counts = context.report.counts
        counts["download_seconds"] += round(time.monotonic() - started, 3)  # type: ignore[assignment]  # a Counter of floats here
        now = datetime.now(UTC)
        built: list[tuple[Stored, dict[str, Any]]] = []
        for done in stored:
            row = guarded("build the inventory row", self._row, done, context, now)
            if isinstance(row, RejectedRecord):
                failed.append(Failed(done.task, done.carrier, failure_of(row)))
            else:
                built.append((done, row))
        rows, unfit = table_from_rows(
            [row for _, row in built], [item for item, _ in built], self.schema, "build the inventory row"
        )
        failed += [Failed(done.task, done.carrier, failure_of(rejection)) for done, rejection in unfit]
        for failure in failed:
            counts[FAILURE_COUNTERS[failure.failure.category]] += 1
        routed = self.retries.route(failed, context)
        counts["retries_scheduled"] += routed.retries_scheduled
        counts["downloads_dead_lettered"] += routed.dead_lettered
        counts["files_stored"] += rows.num_rows
        unfit_items = {id(item) for item, _ in unfit}
        counts["bytes_stored"] += sum(item.file.size for item, _ in built if id(item) not in unfit_items)
        return rows

    def _not_yet_stored(self, tasks: Sequence[Carried[AttachmentTask]], context: BatchContext) -> list[Carried[AttachmentTask]]:
        unique: dict[tuple[str, ...], Carried[AttachmentTask]] = {}
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
        self, tasks: Sequence[Carried[AttachmentTask]], context: BatchContext
    ) -> tuple[list[Stored], list[Failed[AttachmentTask]]]:
        """Every task once. With a refresher, stale links are renewed before the download and a
        link the host reports expired is renewed and tried again; each link at most once."""
        stored: list[Stored] = []
        failed: list[Failed[AttachmentTask]] = []
        if not tasks:
            return stored, failed
        now = datetime.now(UTC)
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

    async def _refreshed(
        self, items: Sequence[Carried[AttachmentTask]], context: BatchContext
    ) -> tuple[list[Carried[AttachmentTask]], list[Failed[AttachmentTask]]]:
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
        self, items: Sequence[Carried[AttachmentTask]], downloader: AttachmentDownloader, store: FileStore
    ) -> tuple[list[Stored], list[Failed[AttachmentTask]]]:
        """Every task under the guard: one that breaks the code fails alone (unprocessable);
        storage failing fails the run."""
        stored: list[Stored] = []
        failed: list[Failed[AttachmentTask]] = []

        async def one(task: AttachmentTask, carrier: Optional[SourceRecord]) -> None:
            outcome = await guarded_async("download and upload", self._one, task, downloader, store)
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
        return result, blob_path, datetime.now(UTC)

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


def inventory_result(sink: AttachmentInventorySink, run: TaskRun, resources: Any) -> dg.MaterializeResult:
    """What a run of an attachment asset shows: its counts, lag and breaker transitions, and
    the inventory checks on the rows it answers for."""
    lake: DeltaLakeResource = resources.lake
    ingest: IngestConfigResource = resources.ingest
    files: FileStoreResource = resources.files
    metadata = ingest_metadata(run.report, resources.kafka, run.mode)
    metadata["circuit_transitions"] = dg.MetadataValue.json(sink.breaker_transitions)
    checks = inventory_checks(
        sink.spec.table, sink.spec.key_columns, lake, files, run.scope, run.report, ingest.ingest.failed_attachment_ratio_warn
    )
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


@dataclass(frozen=True)
class AttachmentAsset:
    """An attachment inventory asset as its batch runs and its streaming run share it: its task
    feed, the sink that downloads, uploads and records (failures to the retry topics or the
    DLQ), and what a run reports."""

    spec: InventorySpec
    feed: KafkaFeed
    http_key: str  # the resource key of the hosts' AttachmentHttpResource
    topics_of: Callable[[Any], TaskTopics]
    repair: RepairSource
    refresher_of: Optional[Callable[[Any], UrlRefresher]] = None  # for links that expire
    refresher_keys: frozenset[str] = frozenset()  # the resources the refresher uses

    @property
    def resource_keys(self) -> set[str]:
        return {"kafka", "lake", "files", "ingest", self.http_key, *self.feed.resource_keys, *self.refresher_keys}

    def sink(self, resources: Any) -> AttachmentInventorySink:
        topics = self.topics_of(resources)
        return AttachmentInventorySink(
            spec=self.spec,
            http=getattr(resources, self.http_key),
            files=resources.files,
            retries=Retries.of_task_topic(
                resources.kafka, resources.ingest, topics.pending, topics.dead_letters, resources.files
            ),
            refresher=self.refresher_of(resources) if self.refresher_of else None,
        )

    def results(self, resources: Any, sink: Any, report: IngestReport, scope: RunScope) -> list[dg.MaterializeResult]:
        return [inventory_result(sink, TaskRun(report, IngestMode.STREAM, scope), resources)]

    def materialize(self, context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """A batch run: its tasks (or, for a backfill, its day's) into the inventory."""
        resources = context.resources
        sink = self.sink(resources)
        run = work_tasks(
            context,
            sink=sink,
            kafka=resources.kafka,
            lake=resources.lake,
            ingest=resources.ingest,
            asset_name=self.spec.table,
            pending_topic=self.topics_of(resources).pending,
            repair=self.repair,
        )
        return inventory_result(sink, run, resources)
