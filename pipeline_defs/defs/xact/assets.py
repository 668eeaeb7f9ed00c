"""XACT: the event log and the attachment inventory."""

import dagster as dg

from pipeline_defs.defs.xact.checks import REQUIRED_EVENT_COLUMNS, xact_attachments_check_specs, xact_events_check_specs
from pipeline_defs.lib.attachments import AttachmentInventorySink
from pipeline_defs.lib.delta import DeltaLakeResource
from pipeline_defs.lib.delta_checks import inventory_checks
from pipeline_defs.lib.downloader import AttachmentHttpResource
from pipeline_defs.lib.file_store import FileStoreResource
from pipeline_defs.lib.kafka import KafkaResource
from pipeline_defs.lib.partitions import ingestion_days
from pipeline_defs.lib.policies import OWNERS, TRANSIENT_FAILURE_RETRY
from pipeline_defs.lib.dlq import DeadLetterTopic
from pipeline_defs.lib.range_runs import RepairSource, ingest_events, ingest_metadata, work_tasks
from pipeline_defs.lib.retries import Retries
from pipeline_defs.lib.schemas.xact import (
    XACT_ATTACHMENTS,
    XACT_EVENTS,
    XACT_TASK_COLUMNS,
    xact_download_task_records,
    xact_download_tasks,
)
from pipeline_defs.lib.settings import PipelineConfigResource


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
    pipeline: PipelineConfigResource,
) -> dg.MaterializeResult:
    topics = pipeline.topics
    return ingest_events(
        context,
        spec=XACT_EVENTS,
        source_kafka=source_kafka,
        kafka=kafka,
        lake=lake,
        files=files,
        pipeline=pipeline,
        topic=topics.xact_events,
        dlq_topic=topics.xact_events_dlq,
        follow_up_topic=topics.xact_downloads_pending,
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
    pipeline: PipelineConfigResource,
) -> dg.MaterializeResult:
    pending = pipeline.topics.xact_downloads_pending
    sink = AttachmentInventorySink(
        spec=XACT_ATTACHMENTS,
        http=attachment_http,
        files=files,
        retries=Retries(kafka, pipeline.retry_topics(pending), DeadLetterTopic(kafka, pipeline.topics.xact_downloads_dlq, files)),
    )
    report, mode, scope = work_tasks(
        context, sink=sink, kafka=kafka, lake=lake, pipeline=pipeline, asset_name="xact_attachments",
        pending_topic=pending, repair=RepairSource(XACT_EVENTS.table, XACT_TASK_COLUMNS, xact_download_tasks),
    )
    metadata = ingest_metadata(report, kafka, mode)
    metadata["circuit_transitions"] = dg.MetadataValue.json(sink.breaker_transitions)
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=inventory_checks(
            XACT_ATTACHMENTS.table, XACT_ATTACHMENTS.key_columns, lake, files, scope, report,
            pipeline.ingest.failed_attachment_ratio_warn,
        ),
    )
