"""The view asset of a dead-letter topic, and the audit table of the operations on them."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from pipeline_defs.defs.dlq.settings import DlqLimitsResource
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.dlq.health import health
from pipeline_defs.lib.dlq.operations import AUDIT_TABLE
from pipeline_defs.lib.dlq.views import DlqViewSink, DlqViewSpec
from pipeline_defs.lib.ingest.consume import consume_ranges
from pipeline_defs.lib.ingest.runs import ingest_metadata, planned_ranges
from pipeline_defs.lib.ingest.sink import BatchContext, IngestMode, IngestReport
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.policies import OWNERS, TRANSIENT_FAILURE_RETRY
from pipeline_defs.lib.settings import IngestConfigResource


def dlq_view_asset(spec: DlqViewSpec) -> dg.AssetsDefinition:
    @dg.asset(
        name=spec.table,
        group_name="dlq",
        kinds={"kafka", "deltalake"},
        owners=OWNERS,
        retry_policy=TRANSIENT_FAILURE_RETRY,
        required_resource_keys={"kafka", "lake", "ingest", "dlq_limits", *spec.resource_keys},
        description=(
            f"What waits in the `{spec.name}` dead-letter topic: one row per failed item with its "
            "error category, reason, retry count, first/last seen and source coordinates, and its "
            "status (waiting, replayed, resolved, purged). A run without range tags re-reads the "
            "whole topic; newer dead letters win, purged entries stay purged."
        ),
    )
    def _view(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        kafka: KafkaResource = context.resources.kafka
        lake: DeltaLakeResource = context.resources.lake
        ingest: IngestConfigResource = context.resources.ingest
        limits: DlqLimitsResource = context.resources.dlq_limits
        topic = spec.topic_of(context.resources)
        ranges = planned_ranges(context, [topic])
        mode = IngestMode.STREAM if ranges is not None else IngestMode.BACKFILL
        if ranges is None:
            states = kafka.partition_states(topic, kafka.connection.request_timeout_s)
            ranges = [OffsetRange(topic, p, s.low, s.high) for p, s in states.items() if s.high > s.low]
        run = BatchContext(
            group_id=ingest.consumer_group(spec.table),
            run_id=context.run.run_id,
            ingestion_date=datetime.now(UTC).date(),
            mode=mode,
            report=IngestReport(),
            log=context.log,
        )
        report = consume_ranges(ranges, sink=DlqViewSink(spec), source=kafka, lake=lake, context=run)
        state = health(lake, spec, timedelta(minutes=limits.limits.growth_window_min))
        return dg.MaterializeResult(
            metadata={
                **ingest_metadata(report, kafka, mode),
                "waiting": state.waiting,
                "waiting_by_category": dg.MetadataValue.json(state.by_category),
                "oldest_waiting_hours": round((state.oldest_age_s or 0) / 3600, 2),
                "new_per_minute": round(state.new_per_minute, 3),
            }
        )

    return _view


dlq_audit = dg.AssetSpec(
    AUDIT_TABLE,
    group_name="dlq",
    kinds={"deltalake"},
    owners=OWNERS,
    description=(
        "Every DLQ operation (replay, resolve, purge; from the Launchpad or the CLI): filters, "
        "entry ids, dry run or applied or refused, reason, run id, who launched it, when."
    ),
)
