import dagster as dg

from pipeline_defs.defs.xact.checks import xact_events_check_specs, xact_events_checks
from pipeline_defs.lib.delta import DeltaLakeResource
from pipeline_defs.lib.kafka import KafkaResource
from pipeline_defs.lib.kafka_to_delta import ingest_ranges
from pipeline_defs.lib.partitions import ingestion_days
from pipeline_defs.lib.policies import OWNERS, TRANSIENT_FAILURE_RETRY
from pipeline_defs.lib.range_runs import batch_for_run, ingest_metadata
from pipeline_defs.lib.schemas.xact import XACT_EVENTS_SINK
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
        "date. Malformed or invalid messages go to the events DLQ topic with their reason."
    ),
)
def xact_events(
    context: dg.AssetExecutionContext,
    source_kafka: KafkaResource,
    kafka: KafkaResource,
    lake: DeltaLakeResource,
    pipeline: PipelineConfigResource,
) -> dg.MaterializeResult:
    topic = pipeline.topics.xact_events
    batch = batch_for_run(context, topic, source_kafka)
    report = ingest_ranges(
        batch.ranges,
        sink=XACT_EVENTS_SINK,
        source=source_kafka,
        lake=lake,
        group_id=pipeline.consumer_group("xact_events"),
        ingestion_date=batch.day,
        run_id=context.run.run_id,
        mode=batch.mode,
        dead_letters=kafka,
        dlq_topic=pipeline.topics.xact_events_dlq,
        dedup_window_days=pipeline.ingest.dedup_window_days,
        batch_size=pipeline.ingest.max_events_per_run,
        log=context.log,
    )
    return dg.MaterializeResult(
        metadata=ingest_metadata(report, source_kafka, topic, batch.mode),
        check_results=xact_events_checks(
            lake, context.run.run_id, batch.day, pipeline.ingest.dedup_window_days
        ),
    )
