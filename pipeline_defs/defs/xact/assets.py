"""XACT: the event log and the attachment inventory."""

import dagster as dg

from pipeline_defs.defs.xact.checks import REQUIRED_EVENT_COLUMNS, xact_attachments_check_specs, xact_events_check_specs
from pipeline_defs.defs.xact.models import (
    XACT_ATTACHMENTS,
    XACT_EVENTS,
    XACT_TASK_COLUMNS,
    xact_download_task_records,
    xact_download_tasks,
)
from pipeline_defs.defs.xact.settings import XactTopicsResource
from pipeline_defs.lib.attachments.downloader import AttachmentHttpResource
from pipeline_defs.lib.attachments.file_store import FileStoreResource
from pipeline_defs.lib.attachments.inventory import store_attachments
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.ingest.runs import RepairSource, ingest_events
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.policies import OWNERS, TRANSIENT_FAILURE_RETRY, ingestion_days
from pipeline_defs.lib.settings import IngestConfigResource


@dg.asset(
    name="xact_events",
    partitions_def=ingestion_days,
    group_name="xact",
    kinds={"kafka", "deltalake"},
    owners=OWNERS,
    pool="delta_xact_events",
    retry_policy=TRANSIENT_FAILURE_RETRY,
    check_specs=xact_events_check_specs,
    description=(
        "Every XACT event from `events.raw`, one row per trace_id, partitioned by ingestion "
        "date. Malformed or invalid messages go to the events DLQ topic with their reason; "
        "each new event's attachment URLs become download tasks on `downloads.pending`."
    ),
)
def xact_events(
    context: dg.AssetExecutionContext,
    source_kafka: KafkaResource,
    kafka: KafkaResource,
    lake: DeltaLakeResource,
    files: FileStoreResource,
    ingest: IngestConfigResource,
    xact_topics: XactTopicsResource,
) -> dg.MaterializeResult:
    topics = xact_topics.topics
    return ingest_events(
        context,
        spec=XACT_EVENTS,
        source_kafka=source_kafka,
        kafka=kafka,
        lake=lake,
        files=files,
        ingest=ingest,
        topic=topics.events,
        dlq_topic=topics.events_dlq,
        follow_up_topic=topics.downloads_pending,
        follow_ups=xact_download_task_records,
        required_columns=REQUIRED_EVENT_COLUMNS,
        key_check="trace_id_unique",
    )


@dg.asset(
    name="xact_attachments",
    partitions_def=ingestion_days,
    deps=[xact_events],
    group_name="xact",
    kinds={"kafka", "deltalake", "azure"},
    owners=OWNERS,
    pool="delta_xact_attachments",
    retry_policy=TRANSIENT_FAILURE_RETRY,
    check_specs=xact_attachments_check_specs,
    description=(
        "Inventory of every XACT attachment downloaded and uploaded to OneLake, one row per "
        "(trace_id, attachment_url), in its event's ingestion-date partition. Sensor runs work "
        "`downloads.pending` and the due part of its retry topics; a backfill of a day downloads "
        "that day's xact_events attachments missing here. Failures retry, then go to the DLQ."
    ),
)
def xact_attachments(
    context: dg.AssetExecutionContext,
    kafka: KafkaResource,
    lake: DeltaLakeResource,
    files: FileStoreResource,
    attachment_http: AttachmentHttpResource,
    ingest: IngestConfigResource,
    xact_topics: XactTopicsResource,
) -> dg.MaterializeResult:
    topics = xact_topics.topics
    return store_attachments(
        context,
        spec=XACT_ATTACHMENTS,
        http=attachment_http,
        kafka=kafka,
        lake=lake,
        files=files,
        ingest=ingest,
        pending_topic=topics.downloads_pending,
        dlq_topic=topics.downloads_dlq,
        repair=RepairSource(XACT_EVENTS.table, XACT_TASK_COLUMNS, xact_download_tasks),
    )
