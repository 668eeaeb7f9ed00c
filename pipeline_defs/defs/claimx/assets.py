"""ClaimX: the event log, the entity tables the API enrichment keeps current, and the media inventory."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from pipeline_defs.defs.claimx.api import ApiAccessRefused, ClaimXApiResource
from pipeline_defs.defs.claimx.checks import (
    REQUIRED_EVENT_COLUMNS,
    claimx_attachments_check_specs,
    claimx_events_check_specs,
    entity_check_specs,
    entity_checks,
)
from pipeline_defs.defs.claimx.enrichment import ENRICHMENT_LOG, EnrichmentSink
from pipeline_defs.defs.claimx.entities import ENTITY_TABLES, MEDIA
from pipeline_defs.defs.claimx.media import MediaUrlRefresher
from pipeline_defs.defs.claimx.models import (
    CLAIMX_ATTACHMENTS,
    CLAIMX_EVENTS,
    CLAIMX_TASK_SOURCE_COLUMNS,
    claimx_enrichment_task_records,
    claimx_enrichment_tasks,
    media_download_tasks,
)
from pipeline_defs.defs.claimx.settings import ClaimXTopicsResource
from pipeline_defs.lib.attachments.downloader import AttachmentHttpResource
from pipeline_defs.lib.attachments.file_store import FileStoreResource
from pipeline_defs.lib.attachments.inventory import store_attachments
from pipeline_defs.lib.delta.entities import MergeStats
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.ingest.retries import Retries
from pipeline_defs.lib.ingest.runs import RepairSource, ingest_events, ingest_metadata, work_tasks
from pipeline_defs.lib.kafka.records import Topic
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.policies import OWNERS, TRANSIENT_FAILURE_RETRY, ingestion_days
from pipeline_defs.lib.settings import IngestConfigResource


@dg.asset(
    name="claimx_events",
    partitions_def=ingestion_days,
    group_name="claimx",
    kinds={"kafka", "deltalake"},
    owners=OWNERS,
    pool="delta_claimx_events",
    retry_policy=TRANSIENT_FAILURE_RETRY,
    check_specs=claimx_events_check_specs,
    description=(
        "Every ClaimX event from `claimx.events.raw` (all nine event types), one row per event_id, "
        "partitioned by ingestion date. Unknown event types and invalid messages go to the ClaimX "
        "events DLQ with their reason; each new event becomes an enrichment task."
    ),
)
def claimx_events(
    context: dg.AssetExecutionContext,
    source_kafka: KafkaResource,
    kafka: KafkaResource,
    lake: DeltaLakeResource,
    files: FileStoreResource,
    ingest: IngestConfigResource,
    claimx_topics: ClaimXTopicsResource,
) -> dg.MaterializeResult:
    topics = claimx_topics.topics
    return ingest_events(
        context,
        spec=CLAIMX_EVENTS,
        source_kafka=source_kafka,
        kafka=kafka,
        lake=lake,
        files=files,
        ingest=ingest,
        topic=topics.events,
        dlq_topic=topics.events_dlq,
        follow_up_topic=topics.enrichment_pending,
        follow_ups=claimx_enrichment_task_records,
        required_columns=REQUIRED_EVENT_COLUMNS,
        key_check="event_id_unique",
    )


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


ENTITY_DESCRIPTIONS = {
    "claimx_projects": "Latest state of each ClaimX project (claim, policy, loss, address, master file name).",
    "claimx_contacts": "Project contacts (policyholder, adjuster) with their invite status.",
    "claimx_media": "Media files of each project (name, type, size, capture time); the files themselves are in claimx_attachments.",
    "claimx_tasks": "Custom tasks assigned on a project, with their status.",
    "claimx_task_templates": "The templates custom tasks are made from, per project.",
    "claimx_external_links": "Customer links sent for custom tasks (host only: the link's token is never stored).",
    "claimx_video_collab": "Video collaboration sessions and their outcome.",
}


@dg.multi_asset(
    name="claimx_entities",
    specs=[
        *(
            dg.AssetSpec(
                table.name,
                deps=[claimx_events],
                group_name="claimx",
                kinds={"deltalake"},
                owners=OWNERS,
                description=f"{ENTITY_DESCRIPTIONS[table.name]} MERGEd on ({', '.join(table.keys)}) from the ClaimX API.",
            )
            for table in ENTITY_TABLES
        ),
        dg.AssetSpec(
            ENRICHMENT_LOG,
            deps=[claimx_events],
            group_name="claimx",
            kinds={"kafka", "deltalake"},
            owners=OWNERS,
            description=(
                "One row per ClaimX event: enriched, retrying or dead-lettered, with the reason, the tables it "
                "touched and the media it queued. Sensor runs work `claimx.enrichment.pending` and the due part "
                "of its retry topics; a backfill of a day enriches that day's claimx_events again."
            ),
        ),
    ],
    partitions_def=ingestion_days,
    pool="delta_claimx_entities",
    retry_policy=TRANSIENT_FAILURE_RETRY,
    check_specs=entity_check_specs,
)
def claimx_entities(
    context: dg.AssetExecutionContext,
    kafka: KafkaResource,
    lake: DeltaLakeResource,
    files: FileStoreResource,
    claimx_api: ClaimXApiResource,
    ingest: IngestConfigResource,
    claimx_topics: ClaimXTopicsResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    topics = claimx_topics.topics
    sink = EnrichmentSink(
        api=claimx_api,
        lake=lake,
        retries=Retries.of_task_topic(kafka, ingest, topics.enrichment_pending, topics.enrichment_dlq, files),
        downloads=Topic(kafka, topics.downloads_pending),
    )
    with api_access_required():
        run = work_tasks(
            context,
            sink=sink,
            kafka=kafka,
            lake=lake,
            ingest=ingest,
            asset_name="claimx_entities",
            pending_topic=topics.enrichment_pending,
            repair=RepairSource(CLAIMX_EVENTS.table, CLAIMX_TASK_SOURCE_COLUMNS, claimx_enrichment_tasks),
        )
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
    metadata = ingest_metadata(run.report, kafka, run.mode)
    metadata["api_calls_by_endpoint"] = dg.MetadataValue.json(dict(sink.api_calls_by_endpoint))
    metadata["circuit_transitions"] = dg.MetadataValue.json(sink.breaker_transitions)
    yield dg.MaterializeResult(asset_key=ENRICHMENT_LOG, metadata=metadata)
    yield from entity_checks(lake, run.scope)


def _version(lake: DeltaLakeResource, table: str) -> int:
    """The version of a table this run did not write to (-1: not created yet)."""
    current = lake.load(table)
    return current.version() if current is not None else -1


@dg.asset(
    name="claimx_attachments",
    partitions_def=ingestion_days,
    deps=[MEDIA.name],
    group_name="claimx",
    kinds={"kafka", "deltalake", "azure"},
    owners=OWNERS,
    pool="delta_claimx_attachments",
    retry_policy=TRANSIENT_FAILURE_RETRY,
    check_specs=claimx_attachments_check_specs,
    description=(
        "Inventory of every ClaimX media file downloaded from its presigned link and uploaded to "
        "OneLake under `claimx/<project>/media/`, one row per media_id. Expired links are renewed "
        "through the media API before the retry. Sensor runs work `claimx.downloads.pending` and its "
        "due retry topics; a backfill of a day downloads that day's files missing here."
    ),
)
def claimx_attachments(
    context: dg.AssetExecutionContext,
    kafka: KafkaResource,
    lake: DeltaLakeResource,
    files: FileStoreResource,
    claimx_media_http: AttachmentHttpResource,
    claimx_api: ClaimXApiResource,
    ingest: IngestConfigResource,
    claimx_topics: ClaimXTopicsResource,
) -> dg.MaterializeResult:
    topics = claimx_topics.topics
    with api_access_required():
        return store_attachments(
            context,
            spec=CLAIMX_ATTACHMENTS,
            http=claimx_media_http,
            kafka=kafka,
            lake=lake,
            files=files,
            ingest=ingest,
            pending_topic=topics.downloads_pending,
            dlq_topic=topics.downloads_dlq,
            repair=RepairSource(CLAIMX_EVENTS.table, CLAIMX_TASK_SOURCE_COLUMNS, media_download_tasks),
            refresher=MediaUrlRefresher(claimx_api),
        )
