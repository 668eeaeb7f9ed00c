"""ClaimX enrichment: what the API says about each event's entities, merged into the entity
tables; each new media file becomes a download task. One failed event never fails the batch:
it goes to an enrichment retry topic or the DLQ.

Per batch: pre-flight first (projects the batch refers to but the projects table lacks are
fetched and merged before anything else, so no row ever points at a missing project), then
every event's handler concurrently, sharing the client's per-run answers (ten media events of
one project cost one media call). Entity merges are idempotent side effects done before the
commit that passes the batch's offsets; that commit writes the enrichment log.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Optional

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable

from pipeline_defs.defs.claimx.api import ApiError, ClaimXApiClient, ClaimXApiResource, found
from pipeline_defs.defs.claimx.entities import (
    ENTITY_TABLES,
    PROJECTS,
    Rows,
    project_rows,
)
from pipeline_defs.defs.claimx.handlers import (
    Outcome,
    add_rows,
    fitted,
    handled,
)
from pipeline_defs.defs.claimx.models import ClaimXDownloadTask, ClaimXEnrichmentTask
from pipeline_defs.lib.delta.entities import EntityTable, MergeStats, merge_entities
from pipeline_defs.lib.delta.resource import DeltaLakeResource, as_frame, scan_snapshot
from pipeline_defs.lib.dlq.records import DeadLetterTopic
from pipeline_defs.lib.ingest.consume import merge_by_day
from pipeline_defs.lib.ingest.failures import FAILURE_COUNTERS, TaskFailure, failure_of
from pipeline_defs.lib.ingest.guard import RejectedRecord, guarded_async
from pipeline_defs.lib.ingest.retries import Failed, Retries, task_lineage
from pipeline_defs.lib.ingest.sink import LINEAGE_COLUMNS, PARTITION_COLUMN, BatchContext, DeltaTableSpec, dedup_window
from pipeline_defs.lib.ingest.tasks import Carried, TaskSink
from pipeline_defs.lib.kafka.records import OutRecord, Topic

ENRICHMENT_LOG = "claimx_enrichment_log"
ENRICHED, RETRYING, DEAD_LETTERED = "enriched", "retrying", "dead_lettered"

LOG_COLUMNS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("project_id", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("tables", pa.list_(pa.string())),
        pa.field("download_tasks", pa.int32(), nullable=False),
        pa.field("attempt_count", pa.int32(), nullable=False),
        pa.field("enriched_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
LOG_SCHEMA = pa.unify_schemas([LOG_COLUMNS, LINEAGE_COLUMNS])
LOG_TABLE = DeltaTableSpec(ENRICHMENT_LOG, LOG_SCHEMA)

ENRICHMENT_COUNTERS = (
    "events_enriched",
    "already_enriched",
    "projects_preflight_fetched",
    "download_tasks_sent",
    "failed_transient",
    "failed_permanent",
    "failed_auth",
    "circuit_open",
    "failed_unprocessable",
    "retries_scheduled",
    "enrichment_dead_lettered",
    "api_calls",
    "api_cache_hits",
    "api_not_found",
)


# ---- the sink -----------------------------------------------------------------------------


@dataclass
class EnrichmentSink(TaskSink[ClaimXEnrichmentTask]):
    """Enrichment tasks -> entity tables (side effects), download tasks, retries, and one
    ``claimx_enrichment_log`` row per event (the commit that carries the watermarks). Each
    event's handler runs under the guard, and its rows must fit the entity tables, so an
    answer that breaks the code fails that event alone (unprocessable)."""

    api: ClaimXApiResource
    lake: DeltaLakeResource
    retries: Retries
    downloads: Topic
    counters: tuple[str, ...] = ENRICHMENT_COUNTERS
    merged: dict[str, MergeStats] = field(default_factory=dict)
    api_calls_by_endpoint: Counter = field(default_factory=Counter)
    breaker_transitions: list[str] = field(default_factory=list)
    _entity_tables: dict[str, DeltaTable] = field(default_factory=dict)  # opened once per sink

    spec: DeltaTableSpec = LOG_TABLE
    stage = "read the task"

    # ---- RecordSink ---------------------------------------------------------------------
    @property
    def task_type(self) -> type[ClaimXEnrichmentTask]:
        return ClaimXEnrichmentTask

    def dead_letter_topic(self) -> DeadLetterTopic:
        return self.retries.dead_letters

    def write(self, rows: pa.Table, table: DeltaTable, commit: CommitProperties, context: BatchContext) -> int:
        # the newest outcome wins, except that nothing replaces "enriched" but "enriched"
        latest = as_frame(rows).unique(subset=["event_id"], keep="last", maintain_order=True)
        return merge_by_day(
            table,
            latest.to_arrow().cast(LOG_SCHEMA),
            ("event_id",),
            commit,
            update_when=f"t.outcome <> '{ENRICHED}' OR s.outcome = '{ENRICHED}'",
        )

    # ---- the work -----------------------------------------------------------------------
    def process(self, tasks: Sequence[Carried[ClaimXEnrichmentTask]], context: BatchContext) -> pa.Table:
        tasks = self._not_yet_enriched(tasks, context)
        fetched_at = datetime.now(UTC)  # before any call: a later fetch wins a merge
        outcomes = asyncio.run(self._enrich([task for task, _ in tasks], fetched_at, context)) if tasks else []
        counts = context.report.counts
        entity_rows: Rows = {}
        downloads: list[ClaimXDownloadTask] = []
        failed: list[Failed[ClaimXEnrichmentTask]] = []
        for (task, carrier), outcome in zip(tasks, outcomes):
            if isinstance(outcome, TaskFailure):
                counts[FAILURE_COUNTERS[outcome.category]] += 1
                failed.append(Failed(task, carrier, outcome))
                continue
            counts["events_enriched"] += 1
            add_rows(
                entity_rows,
                outcome.rows,
                source_event_id=task.event_id,
                source_event_type=task.event_type.value,
                fetched_at=fetched_at,
            )
            downloads += outcome.downloads
        for table in ENTITY_TABLES:  # projects first: every other table refers to them
            self._merge(table.name, entity_rows.get(table.name, []), context)
        if downloads:
            counts["download_tasks_sent"] += self.downloads.send(OutRecord(d.encode(), d.message_key) for d in downloads)
        routed = self.retries.route(failed, context)
        counts["retries_scheduled"] += routed.retries_scheduled
        counts["enrichment_dead_lettered"] += routed.dead_lettered
        where = {item.task.key: topic for item, topic in zip(failed, routed.destinations)}
        now = datetime.now(UTC)
        rows = [
            self._log_row(task, carrier, outcome, where.get(task.key), context, now)
            for (task, carrier), outcome in zip(tasks, outcomes)
        ]
        return pa.Table.from_pylist(rows, schema=LOG_SCHEMA)

    def _not_yet_enriched(
        self, tasks: Sequence[Carried[ClaimXEnrichmentTask]], context: BatchContext
    ) -> list[Carried[ClaimXEnrichmentTask]]:
        """Events the log already has as enriched are not asked about again (a backfill, a
        task sent twice): the entity tables hold their answers."""
        log = context.table
        if not tasks or log is None:
            return list(tasks)
        days = sorted({d for task, _ in tasks for d in dedup_window(task.source.ingestion_date, 1)})
        done = set(
            pl.scan_delta(log)
            .filter(pl.col(PARTITION_COLUMN).is_in(days) & (pl.col("outcome") == ENRICHED))
            .filter(pl.col("event_id").is_in([task.event_id for task, _ in tasks]))
            .select("event_id")
            .collect()["event_id"]
        )
        context.report.counts["already_enriched"] += sum(task.event_id in done for task, _ in tasks)
        return [(task, carrier) for task, carrier in tasks if task.event_id not in done]

    async def _enrich(self, tasks: Sequence[ClaimXEnrichmentTask], fetched_at: datetime, context: BatchContext) -> list[Outcome]:
        async with self.api.client() as api:
            blocked = await self._preflight(api, sorted({t.project_id for t in tasks}), fetched_at, context)

            async def one(task: ClaimXEnrichmentTask) -> Outcome:
                if task.project_id in blocked:
                    return blocked[task.project_id]
                outcome = await guarded_async(f"enrich {task.event_type.value}", handled, task, api)
                return failure_of(outcome) if isinstance(outcome, RejectedRecord) else outcome

            outcomes = await asyncio.gather(*(one(task) for task in tasks))
            counts = context.report.counts
            counts["api_calls"] += sum(api.calls.values())
            counts["api_cache_hits"] += api.cache_hits
            counts["api_not_found"] += api.not_found
            self.api_calls_by_endpoint.update(api.calls)
            self.breaker_transitions += [f"{t.from_state.value} -> {t.to_state.value}" for t in api.breakers.transitions]
        return list(outcomes)

    async def _preflight(
        self, api: ClaimXApiClient, project_ids: list[str], fetched_at: datetime, context: BatchContext
    ) -> dict[str, TaskFailure]:
        """Fetch and merge the projects the table lacks; return the projects whose events
        cannot go on now (not found, or the API failed), with the reason."""
        missing = sorted(set(project_ids) - self._known_projects(project_ids))
        answers = await asyncio.gather(*(self._project(api, pid) for pid in missing))
        blocked = {pid: a for pid, a in zip(missing, answers) if isinstance(a, TaskFailure)}
        fetched: Rows = {}
        for answer in answers:
            if not isinstance(answer, TaskFailure):
                add_rows(fetched, answer, source_event_type="preflight", fetched_at=fetched_at)
        context.report.counts["projects_preflight_fetched"] += len(fetched.get(PROJECTS.name, []))
        self._merge(PROJECTS.name, fetched.get(PROJECTS.name, []), context)
        return blocked

    @staticmethod
    async def _project(api: ClaimXApiClient, project_id: str) -> Rows | TaskFailure:
        async def fetch() -> Rows | TaskFailure:
            try:
                return fitted(project_rows(found(await api.get_project(project_id), f"project {project_id}")))
            except ApiError as error:
                return error.failure

        outcome = await guarded_async("fetch the project", fetch)
        return failure_of(outcome) if isinstance(outcome, RejectedRecord) else outcome

    def _known_projects(self, project_ids: list[str]) -> set[str]:
        if not project_ids:
            return set()
        projects = self._entity_table(PROJECTS)
        projects.update_incremental()
        scan = scan_snapshot(projects).select("project_id").filter(pl.col("project_id").is_in(project_ids))
        return set(scan.collect()["project_id"])

    def _entity_table(self, table: EntityTable) -> DeltaTable:
        """The table's handle, kept for the sink's life: a streaming sink merges every
        micro-batch, and opening a table replays its log."""
        if table.name not in self._entity_tables:
            self._entity_tables[table.name] = self.lake.ensure(table.name, table.schema, [])
        return self._entity_tables[table.name]

    def _merge(self, table_name: str, rows: list[dict[str, Any]], context: BatchContext) -> None:
        table = next(t for t in ENTITY_TABLES if t.name == table_name)
        stats = merge_entities(self._entity_table(table), table, rows, context.run_id) if rows else MergeStats()
        self.merged[table_name] = self.merged.get(table_name, MergeStats()) + stats

    def _log_row(
        self,
        task: ClaimXEnrichmentTask,
        carrier: Any,
        outcome: Outcome,
        routed_to: Optional[str],
        context: BatchContext,
        now: datetime,
    ) -> dict[str, Any]:
        if isinstance(outcome, TaskFailure):
            state = DEAD_LETTERED if routed_to == self.retries.dead_letter_topic else RETRYING
            detail, tables, downloads = f"{outcome.code}: {outcome.detail}", [], 0
        else:
            state, detail = ENRICHED, None
            tables, downloads = sorted(t for t, rows in outcome.rows.items() if rows), len(outcome.downloads)
        return {
            "event_id": task.event_id,
            "event_type": task.event_type.value,
            "project_id": task.project_id,
            "outcome": state,
            "detail": detail,
            "tables": tables,
            "download_tasks": downloads,
            "attempt_count": len(task.history) + 1,
            "enriched_at": now,
            **task_lineage(task, carrier, context.run_id, now),
        }
