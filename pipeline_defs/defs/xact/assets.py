from datetime import date

import dagster as dg

from pipeline_defs.defs.xact.checks import (
    xact_attachments_check_specs,
    xact_attachments_checks,
    xact_events_check_specs,
    xact_events_checks,
)
from pipeline_defs.lib.attachments import AttachmentInventorySink, Retries, repair_day
from pipeline_defs.lib.delta import DeltaLakeResource
from pipeline_defs.lib.downloader import AttachmentHttpResource
from pipeline_defs.lib.event_log import EventLogSink, Topic
from pipeline_defs.lib.file_store import FileStoreResource
from pipeline_defs.lib.kafka import KafkaResource
from pipeline_defs.lib.kafka_to_delta import BatchContext, IngestMode, IngestReport, consume_ranges
from pipeline_defs.lib.partitions import ingestion_days
from pipeline_defs.lib.policies import OWNERS, TRANSIENT_FAILURE_RETRY
from pipeline_defs.lib.range_runs import batch_for_run, ingest_metadata, planned_ranges
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
    pipeline: PipelineConfigResource,
) -> dg.MaterializeResult:
    topics = pipeline.topics
    batch = batch_for_run(context, topics.xact_events, source_kafka)
    sink = EventLogSink(
        spec=XACT_EVENTS,
        dead_letters=Topic(kafka, topics.xact_events_dlq),
        dedup_window_days=pipeline.ingest.dedup_window_days,
        follow_up=Topic(kafka, topics.xact_downloads_pending),
        follow_ups=xact_download_task_records,
    )
    run = BatchContext(
        group_id=pipeline.consumer_group("xact_events"),
        run_id=context.run.run_id,
        ingestion_date=batch.day,
        mode=batch.mode,
        report=IngestReport(),
        log=context.log,
    )
    report = consume_ranges(
        batch.ranges, sink=sink, source=source_kafka, lake=lake, context=run,
        batch_size=pipeline.ingest.max_events_per_run,
    )
    return dg.MaterializeResult(
        metadata=ingest_metadata(report, source_kafka, batch.mode),
        check_results=xact_events_checks(lake, context.run.run_id, pipeline.ingest.dedup_window_days),
    )


@dg.asset(
    name="xact_attachments",
    partitions_def=ingestion_days,
    deps=[xact_events],
    group_name="xact",
    kinds={"kafka", "deltalake", "azure"},
    owners=OWNERS,
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
    retry_topics = pipeline.retry_topics(pending)
    sink = AttachmentInventorySink(
        spec=XACT_ATTACHMENTS,
        http=attachment_http,
        files=files,
        retries=Retries(retry_topics, Topic(kafka, pipeline.topics.xact_downloads_dlq)),
    )
    ranges = planned_ranges(context, [pending, *(t for t, _ in retry_topics)])
    day = date.fromisoformat(context.partition_key)
    run = BatchContext(
        group_id=pipeline.consumer_group("xact_attachments"),
        run_id=context.run.run_id,
        ingestion_date=day,
        mode=IngestMode.STREAM if ranges is not None else IngestMode.BACKFILL,
        report=IngestReport(),
        log=context.log,
    )
    if ranges is not None:
        report = consume_ranges(
            ranges, sink=sink, source=kafka, lake=lake, context=run,
            batch_size=pipeline.ingest.attachments_per_commit,
        )
    else:
        report = repair_day(
            sink, lake, run,
            events_table=XACT_EVENTS.table,
            event_columns=XACT_TASK_COLUMNS,
            tasks_from_events=xact_download_tasks,
            batch_size=pipeline.ingest.attachments_per_commit,
        )
    metadata = ingest_metadata(report, kafka, run.mode)
    metadata["circuit_transitions"] = dg.MetadataValue.json(sink.breaker_transitions)
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=xact_attachments_checks(
            lake, files, context.run.run_id, report, pipeline.ingest.failed_attachment_ratio_warn
        ),
    )
