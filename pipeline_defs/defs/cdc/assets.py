"""One asset per replicated table, fed by its ``cassandra.<keyspace>.<table>`` topic: sensor runs
apply their offset ranges; a run without ranges (a Materialize click) catches up from the
offsets PostgreSQL holds to the log end; the backfill job replays from an offset or a time."""

from typing import Any, Optional

import dagster as dg

from pipeline_defs.defs.cdc.settings import CdcSettings
from pipeline_defs.lib.cdc.model import TableSpec
from pipeline_defs.lib.cdc.replicate import ReplicationOptions, ReplicationReport, Replicator, replication_lag_s
from pipeline_defs.lib.dlq.records import DeadLetterTopic
from pipeline_defs.lib.ingest.runs import planned_ranges
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import Topic
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.policies import OWNERS

DAY_US = 86_400 * 1_000_000
# PostgreSQL down, a lost race, a record failing again: the step again after 1, 2, 4 .. 32 s
# (± jitter, under a minute each); past that the run fails and the sensor plans its ranges again.
CDC_RETRY = dg.RetryPolicy(max_retries=6, delay=1, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def asset_name(spec: TableSpec) -> str:
    return f"cdc_{spec.pg_table}"


def group_id(resources: Any, spec: TableSpec) -> str:
    return resources.ingest.consumer_group(asset_name(spec))


def replicator(resources: Any, spec: TableSpec, run_id: str, backfill: bool = False) -> Replicator:
    settings: CdcSettings = resources.cdc.settings
    kafka: KafkaResource = resources.kafka
    return Replicator(
        kafka=kafka,
        postgres=resources.cdc_postgres,
        spec=spec,
        validation=DeadLetterTopic(kafka, settings.validation_topic, resources.files),
        dlq=DeadLetterTopic(kafka, settings.dlq_topic, resources.files),
        staleness=Topic(kafka, settings.staleness_topic),
        group_id=group_id(resources, spec),
        run_id=run_id,
        options=ReplicationOptions(
            schema=settings.pg_schema,
            soft_delete=settings.delete_mode == "soft",
            stale_threshold_us=None if backfill else int(settings.stale_after_days * DAY_US),
            batch_events=settings.batch_events,
            max_record_failures=settings.max_record_failures,
            start_at_plan=backfill,
        ),
    )


def report_metadata(report: ReplicationReport, ranges: list[OffsetRange]) -> dict[str, Any]:
    lag = replication_lag_s(report)
    return {
        "events_read": report.read,
        "inserted": report.inserted,
        "updated": report.updated,
        "deleted": report.deleted,
        "stale": report.stale,
        "flagged_older_than_threshold": report.flagged_old,
        "invalid": report.invalid,
        "invalid_share": dg.FloatMetadataValue(round(report.invalid_share, 4)),
        "tombstones_skipped": report.tombstones,
        "already_applied": report.already_applied,
        "dead_lettered_after_failures": report.dead_lettered,
        "columns_added": ", ".join(report.added_columns),
        "replication_lag_s": dg.FloatMetadataValue(lag) if lag is not None else dg.FloatMetadataValue(None),
        "offset_ranges": ",".join(f"{r.partition}:{r.start}-{r.end}" for r in ranges),
    }


def broken_columns(report: ReplicationReport, settings: CdcSettings) -> dict[str, int]:
    """Declared columns whose values mostly no longer fit: a type change upstream, not a few
    dirty records (those only go to the validation topic)."""
    floor = max(settings.schema_break_min_events, settings.schema_break_share * report.read)
    return {column: n for column, n in report.invalid_columns.items() if n >= floor}


def report_checks(report: ReplicationReport, settings: CdcSettings, key: dg.AssetKey) -> list[dg.AssetCheckResult]:
    share, broken, lag = report.invalid_share, broken_columns(report, settings), replication_lag_s(report)
    return [
        dg.AssetCheckResult(
            asset_key=key,
            check_name="invalid_share_below_threshold",
            passed=share <= settings.invalid_share_warn,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"invalid": report.invalid, "read": report.read, "share": dg.FloatMetadataValue(round(share, 4))},
        ),
        dg.AssetCheckResult(
            asset_key=key,
            check_name="declared_schema_holds",
            passed=not broken,
            severity=dg.AssetCheckSeverity.ERROR,
            description="declared columns whose values no longer fit their type: a breaking schema change upstream",
            metadata={
                "broken_columns": ", ".join(f"{c} ({n} records)" for c, n in sorted(broken.items())) or "none",
                "columns_with_invalid_values": ", ".join(f"{c} ({n})" for c, n in sorted(report.invalid_columns.items()))
                or "none",
            },
        ),
        dg.AssetCheckResult(
            asset_key=key,
            check_name="replication_lag_below_threshold",
            passed=lag is None or lag <= settings.max_lag_s,
            severity=dg.AssetCheckSeverity.WARN,
            description="now minus the newest writetime this run applied (none applied: nothing to judge)",
            metadata={"lag_s": dg.FloatMetadataValue(lag), "threshold_s": dg.FloatMetadataValue(settings.max_lag_s)},
        ),
    ]


def catch_up_ranges(kafka: KafkaResource, topic: str, start_offsets: Optional[dict[int, int]]) -> list[OffsetRange]:
    """From ``start_offsets`` (else the log start) to the log end of every partition."""
    states = kafka.partition_states(topic, kafka.connection.request_timeout_s)
    starts = start_offsets or {}
    return [
        OffsetRange(topic, p, max(state.low, starts.get(p, state.low)), state.high)
        for p, state in sorted(states.items())
        if state.high > max(state.low, starts.get(p, state.low))
    ]


def build_table_asset(spec: TableSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey(asset_name(spec))

    @dg.asset(
        key=key,
        kinds={"kafka", "postgres"},
        group_name="cdc",
        owners=OWNERS,
        retry_policy=CDC_RETRY,
        required_resource_keys={"kafka", "cdc", "cdc_postgres", "files", "ingest"},
        check_specs=[
            dg.AssetCheckSpec("invalid_share_below_threshold", asset=key, description="WARN above cdc.invalid_share_warn"),
            dg.AssetCheckSpec("declared_schema_holds", asset=key, blocking=True, description="no declared column changed type"),
            dg.AssetCheckSpec("replication_lag_below_threshold", asset=key, description="WARN above cdc.max_lag_s"),
        ],
        description=(
            f"PostgreSQL table {spec.pg_table}, replicated from Cassandra {spec.keyspace}.{spec.table} through Debezium "
            f"change events on {spec.topic}: newest writetime wins, offsets stored with the rows."
        ),
    )
    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        resources: Any = context.resources
        ranges = planned_ranges(context, [spec.topic])
        replication = replicator(resources, spec, context.run.run_id)
        if ranges is None:  # a Materialize click: from what PostgreSQL holds to the log end
            ranges = catch_up_ranges(resources.kafka, spec.topic, replication.applied())
        report = replication.run(ranges)
        return dg.MaterializeResult(
            metadata=report_metadata(report, ranges), check_results=report_checks(report, resources.cdc.settings, key)
        )

    return _asset
