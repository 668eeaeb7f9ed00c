"""How ClaimX's Kafka-fed assets read, write and report, shared by their batch runs and their
streaming runs: the event log, the enrichment into the entity tables, and the media inventory."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg

from pipeline_defs.defs.claimx.api import ApiAccessRefused
from pipeline_defs.defs.claimx.checks import REQUIRED_EVENT_COLUMNS, entity_checks
from pipeline_defs.defs.claimx.enrichment import ENRICHMENT_LOG, EnrichmentSink
from pipeline_defs.defs.claimx.entities import ENTITY_TABLES
from pipeline_defs.defs.claimx.feeds import CLAIMX_DOWNLOADS_FEED, CLAIMX_ENRICHMENT_FEED, CLAIMX_EVENTS_FEED
from pipeline_defs.defs.claimx.media import MediaUrlRefresher
from pipeline_defs.defs.claimx.models import (
    CLAIMX_ATTACHMENTS,
    CLAIMX_EVENTS,
    CLAIMX_TASK_SOURCE_COLUMNS,
    claimx_enrichment_task_records,
    claimx_enrichment_tasks,
    media_download_tasks,
)
from pipeline_defs.lib.attachments.inventory import AttachmentAsset
from pipeline_defs.lib.delta.checks import RunScope
from pipeline_defs.lib.delta.entities import MergeStats
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.ingest.feeds import KafkaFeed
from pipeline_defs.lib.ingest.retries import Retries
from pipeline_defs.lib.ingest.runs import (
    EventLogAsset,
    EventTopics,
    RepairSource,
    TaskRun,
    TaskTopics,
    ingest_metadata,
    work_tasks,
)
from pipeline_defs.lib.ingest.sink import IngestMode, IngestReport
from pipeline_defs.lib.ingest.stream_jobs import RunResult
from pipeline_defs.lib.kafka.records import Topic


@contextmanager
def api_access_required() -> Iterator[None]:
    """A refused token is no event's fault: the run fails without retries (they would be
    refused too) and its offsets stay where they were, so nothing is lost or dead-lettered."""
    try:
        yield
    except ApiAccessRefused as refused:
        raise dg.Failure(
            description=f"{refused}. Fix the token (settings claimx.api.token_env) and re-execute this run.",
            allow_retries=False,
        ) from None


CLAIMX_EVENT_LOG = EventLogAsset(
    spec=CLAIMX_EVENTS,
    feed=CLAIMX_EVENTS_FEED,
    topics_of=lambda r: EventTopics(
        r.claimx_topics.topics.events, r.claimx_topics.topics.events_dlq, r.claimx_topics.topics.enrichment_pending
    ),
    follow_ups=claimx_enrichment_task_records,
    required_columns=REQUIRED_EVENT_COLUMNS,
    key_check="event_id_unique",
)

CLAIMX_INVENTORY = AttachmentAsset(
    spec=CLAIMX_ATTACHMENTS,
    feed=CLAIMX_DOWNLOADS_FEED,
    http_key="claimx_media_http",
    topics_of=lambda r: TaskTopics(r.claimx_topics.topics.downloads_pending, r.claimx_topics.topics.downloads_dlq),
    repair=RepairSource(CLAIMX_EVENTS.table, CLAIMX_TASK_SOURCE_COLUMNS, media_download_tasks),
    refresher_of=lambda r: MediaUrlRefresher(r.claimx_api),
    refresher_keys=frozenset({"claimx_api"}),
)


@dataclass(frozen=True)
class EnrichmentAsset:
    """The entity tables and the enrichment log as their batch runs and streaming run share
    them: the enrichment task feed, the sink that calls the API and merges, what a run reports."""

    feed: KafkaFeed = CLAIMX_ENRICHMENT_FEED
    resource_keys: frozenset[str] = frozenset({"kafka", "lake", "files", "ingest", "claimx_api", "claimx_topics"})

    def sink(self, resources: Any) -> EnrichmentSink:
        topics = resources.claimx_topics.topics
        return EnrichmentSink(
            api=resources.claimx_api,
            lake=resources.lake,
            retries=Retries.of_task_topic(
                resources.kafka, resources.ingest, topics.enrichment_pending, topics.enrichment_dlq, resources.files
            ),
            downloads=Topic(resources.kafka, topics.downloads_pending),
        )

    def results(self, resources: Any, sink: Any, report: IngestReport, scope: RunScope) -> Iterator[RunResult]:
        return self._results(resources, sink, TaskRun(report, IngestMode.STREAM, scope))

    def materialize(self, context: dg.AssetExecutionContext) -> Iterator[RunResult]:
        resources = context.resources
        sink = self.sink(resources)
        with api_access_required():
            run = work_tasks(
                context,
                sink=sink,
                kafka=resources.kafka,
                lake=resources.lake,
                ingest=resources.ingest,
                asset_name="claimx_entities",
                pending_topic=resources.claimx_topics.topics.enrichment_pending,
                repair=RepairSource(CLAIMX_EVENTS.table, CLAIMX_TASK_SOURCE_COLUMNS, claimx_enrichment_tasks),
            )
        return self._results(resources, sink, run)

    def _results(self, resources: Any, sink: EnrichmentSink, run: TaskRun) -> Iterator[RunResult]:
        lake: DeltaLakeResource = resources.lake
        for table in ENTITY_TABLES:
            stats = sink.merged.get(table.name, MergeStats())
            yield dg.MaterializeResult(
                asset_key=table.name,
                metadata={
                    "rows_inserted": stats.inserted,
                    "rows_updated": stats.updated,
                    "rows_unchanged": stats.unchanged,
                    "commit_conflicts_retried": stats.conflicts,
                    "delta_version": stats.version if stats.version >= 0 else _version(lake, table.name),
                },
            )
        metadata = ingest_metadata(run.report, resources.kafka, run.mode)
        metadata["api_calls_by_endpoint"] = dg.MetadataValue.json(dict(sink.api_calls_by_endpoint))
        metadata["circuit_transitions"] = dg.MetadataValue.json(sink.breaker_transitions)
        yield dg.MaterializeResult(asset_key=ENRICHMENT_LOG, metadata=metadata)
        yield from entity_checks(lake, run.scope)


CLAIMX_ENRICHMENT = EnrichmentAsset()


def _version(lake: DeltaLakeResource, table: str) -> int:
    """The version of a table this run did not write to (-1: not created yet)."""
    current = lake.load(table)
    return current.version() if current is not None else -1
