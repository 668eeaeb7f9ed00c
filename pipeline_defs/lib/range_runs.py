"""The Dagster half of the offset-range pattern: sensors plan ranges into run tags,
runs turn their tags back into ranges."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta, timezone
from typing import Any, Callable, Mapping, Optional, Sequence

import dagster as dg

import polars as pl

from pipeline_defs.lib.delta import DeltaLakeResource
from pipeline_defs.lib.delta_checks import event_log_checks
from pipeline_defs.lib.event_log import EventLogSink, EventLogSpec
from pipeline_defs.lib.kafka import KafkaResource, KafkaUnavailableError, Topic
from pipeline_defs.lib.kafka_to_delta import (
    BatchContext,
    IngestMode,
    IngestReport,
    TaskSink,
    consume_ranges,
    repair_day,
)
from pipeline_defs.lib.offset_ranges import (
    EVENTS_TAG,
    RANGES_TAG,
    TOPIC_TAG,
    OffsetRange,
    PartitionState,
    decode_cursor,
    decode_ranges,
    encode_cursor,
    encode_ranges,
    plan_runs,
    run_key,
)
from pipeline_defs.lib.settings import PipelineConfigResource

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

# The sensor daemon wakes every 5 s and ticks a sensor whose interval has elapsed since its
# last tick started; 4 s makes every wake-up tick (5 s would skip every other one: 10 s).
SENSOR_INTERVAL_S = 4


@dataclass(frozen=True)
class SensorTopic:
    name: str
    delay_s: Optional[int] = None  # a retry topic: only records older than this are due


def build_offset_range_sensor(
    *,
    name: str,
    job: Any,
    asset_name: str,
    topics_of: Callable[[PipelineConfigResource], Sequence[SensorTopic]],
    description: str,
    source_resource_key: str = "source_kafka",
    partitioned: bool = True,
    gated_by: Sequence[dg.AssetCheckKey] = (),
) -> dg.SensorDefinition:
    """A sensor that plans the unplanned (and, for retry topics, due) offsets of its topics
    into partitioned runs, one topic per run. While the latest evaluation of a ``gated_by``
    check (the blocking checks of the asset that produced the work) has failed, it plans
    nothing: the work waits in Kafka until a later run of that asset passes them.

    It reads offsets and its JSON cursor, never commits consumer offsets, and with the broker
    down ends the tick with a skip reason inside ``tick_budget_s``, cursor unchanged. While the
    job has ``max_runs_in_flight`` runs queued or running it plans nothing, so a backlog makes
    the next runs bigger instead of the run queue longer. Delayed
    topics are not polled in a loop: the due range of a delay-d topic simply ends at the first
    offset written after now - d.
    """

    @dg.sensor(
        name=name,
        job=job,
        description=description,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={source_resource_key, "pipeline"},
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        kafka: KafkaResource = getattr(context.resources, source_resource_key)
        pipeline: PipelineConfigResource = context.resources.pipeline
        group_id = pipeline.consumer_group(asset_name)
        deadline = time.monotonic() + pipeline.ingest.tick_budget_s
        in_flight = context.instance.get_runs_count(dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT))
        run_budget = min(pipeline.ingest.max_runs_per_tick, pipeline.ingest.max_runs_in_flight - in_flight)
        if run_budget <= 0:
            return dg.SkipReason(f"{in_flight} {job.name} runs queued or running; planning waits for them")
        failed_gate = _failed_check(context.instance, gated_by)
        if failed_gate is not None:
            return dg.SkipReason(failed_gate)
        cursor = decode_cursor(context.cursor)
        partition_key = datetime.now(timezone.utc).date().isoformat() if partitioned else None
        requests: list[dg.RunRequest] = []
        try:
            for topic in topics_of(pipeline):
                budget = run_budget - len(requests)
                if budget <= 0:
                    break
                states = _due_states(kafka, topic, deadline)
                planned = cursor.setdefault(topic.name, {})
                new = [p for p in states if p not in planned]
                if new:
                    planned.update(_first_offsets(kafka, pipeline, group_id, topic.name, new, states, deadline))
                plan = plan_runs(topic.name, planned, states, pipeline.ingest.max_events_per_run, budget)
                for partition, lost in plan.skipped_to_low_watermark.items():
                    context.log.warning(f"{topic.name}[{partition}]: {lost} offsets expired before planning")
                cursor[topic.name] = plan.next_offsets
                requests += [_run_request(topic.name, ranges, partition_key) for ranges in plan.runs]
        except KafkaUnavailableError as exc:
            return dg.SkipReason(f"Kafka unavailable; nothing planned, cursor kept: {exc}")
        if not requests:
            return dg.SensorResult(cursor=encode_cursor(cursor), skip_reason="no new offsets")
        return dg.SensorResult(run_requests=requests, cursor=encode_cursor(cursor))

    return _sensor


def blocking_checks(asset: dg.AssetsDefinition) -> list[dg.AssetCheckKey]:
    """The blocking checks an asset's runs evaluate: the gates of the work it hands on."""
    return [spec.key for spec in asset.check_specs if spec.blocking]


def _failed_check(instance: dg.DagsterInstance, checks: Sequence[dg.AssetCheckKey]) -> Optional[str]:
    """Why planning waits, if the latest evaluation of one of ``checks`` failed."""
    for key in checks:
        latest = instance.get_latest_asset_check_evaluation_record(key)
        if latest is not None and latest.status.value == "FAILED":
            return (
                f"blocking check {key.asset_key.to_user_string()}:{key.name} failed in run {latest.run_id}; "
                "the work waits in Kafka until a later run passes it"
            )
    return None


def build_task_sensors(
    *,
    name: str,
    job: Any,
    asset_name: str,
    pending_of: Callable[[PipelineConfigResource], str],
    what: str,
    gated_by: Sequence[dg.AssetCheckKey] = (),
) -> tuple[dg.SensorDefinition, dg.SensorDefinition]:
    """The two sensors of a task topic: new tasks, and the due part of its retry topics; both
    wait while a ``gated_by`` check of the asset that made the tasks has failed."""
    pending = build_offset_range_sensor(
        name=f"{name}_pending_sensor",
        job=job,
        asset_name=asset_name,
        topics_of=lambda pipeline: [SensorTopic(pending_of(pipeline))],
        description=f"Plans new {what} into {asset_name} runs.",
        source_resource_key="kafka",
        gated_by=gated_by,
    )
    retries = build_offset_range_sensor(
        name=f"{name}_retry_sensor",
        job=job,
        asset_name=asset_name,
        topics_of=lambda pipeline: [SensorTopic(t, d) for t, d in pipeline.retry_topics(pending_of(pipeline))],
        description=f"Plans the due part of each retry topic of {what} (tasks that have waited their delay) into {asset_name} runs.",
        source_resource_key="kafka",
        gated_by=gated_by,
    )
    return pending, retries


def _remaining(deadline: float, kafka: KafkaResource) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise KafkaUnavailableError("tick budget spent before the broker answered")
    return min(left, kafka.connection.request_timeout_s)


def _due_states(kafka: KafkaResource, topic: SensorTopic, deadline: float) -> dict[int, PartitionState]:
    states = kafka.partition_states(topic.name, _remaining(deadline, kafka))
    if topic.delay_s is None:
        return states
    cutoff_ms = int((time.time() - topic.delay_s) * 1000)
    due = kafka.offsets_for_timestamp(topic.name, cutoff_ms, _remaining(deadline, kafka))
    return {p: PartitionState(s.low, min(s.high, due[p])) for p, s in states.items()}


def _run_request(topic: str, ranges: Sequence[OffsetRange], partition_key: Optional[str]) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key(topic, ranges),
        partition_key=partition_key,
        tags={
            TOPIC_TAG: topic,
            RANGES_TAG: encode_ranges(ranges),
            EVENTS_TAG: str(sum(r.size for r in ranges)),
        },
    )


def _first_offsets(
    kafka: KafkaResource,
    pipeline: PipelineConfigResource,
    group_id: str,
    topic: str,
    partitions: list[int],
    states: Mapping[int, PartitionState],
    deadline: float,
) -> dict[int, int]:
    """Where planning starts for partitions the cursor has never seen: the group's committed
    offset, else the log start (``earliest``) or end (``latest``). For ``latest`` the start is
    committed, so runs that find no Delta watermark begin there too."""
    committed = kafka.committed_offsets(group_id, topic, partitions, _remaining(deadline, kafka))
    latest = pipeline.ingest.start_from == "latest"
    chosen = {p: committed.get(p, states[p].high if latest else states[p].low) for p in partitions}
    if latest:
        kafka.commit_offsets(group_id, {(topic, p): o for p, o in chosen.items() if p not in committed})
    return chosen


def planned_ranges(context: dg.AssetExecutionContext, topics: Sequence[str]) -> Optional[list[OffsetRange]]:
    """The ranges a sensor run was planned for, or ``None`` for a run without them (a
    backfill, a Materialize click)."""
    tags = context.run.tags
    if RANGES_TAG not in tags:
        return None
    topic = tags.get(TOPIC_TAG, "")
    if topic not in topics:
        raise ValueError(f"run planned for topic {topic!r}; this asset reads {list(topics)}")
    return decode_ranges(topic, tags[RANGES_TAG])


@dataclass(frozen=True)
class RunBatch:
    mode: IngestMode
    day: date
    ranges: list[OffsetRange]


def batch_for_run(context: dg.AssetExecutionContext, topic: str, kafka: KafkaResource) -> RunBatch:
    """Sensor runs carry their ranges in tags. A run without them re-reads its partition's
    day from Kafka, found by message timestamp."""
    day = date.fromisoformat(context.partition_key)
    ranges = planned_ranges(context, [topic])
    if ranges is not None:
        return RunBatch(IngestMode.STREAM, day, ranges)
    start = datetime.combine(day, dtime.min, tzinfo=timezone.utc)
    timeout = kafka.connection.request_timeout_s
    first = kafka.offsets_for_timestamp(topic, _ms(start), timeout)
    after = kafka.offsets_for_timestamp(topic, _ms(start + timedelta(days=1)), timeout)
    ranges = [OffsetRange(topic, p, first[p], after[p]) for p in sorted(first) if after[p] > first[p]]
    return RunBatch(IngestMode.BACKFILL, day, ranges)


def ingest_events(
    context: dg.AssetExecutionContext,
    *,
    spec: EventLogSpec,
    source_kafka: KafkaResource,
    kafka: KafkaResource,
    lake: DeltaLakeResource,
    pipeline: PipelineConfigResource,
    topic: str,
    dlq_topic: str,
    follow_up_topic: str,
    follow_ups: Callable[[pl.DataFrame], Any],
    required_columns: Sequence[str],
    key_check: str,
) -> dg.MaterializeResult:
    """A run of an event-log asset: its planned ranges (or, for a backfill, its day) of
    ``topic`` into ``spec``'s table; bad messages to ``dlq_topic``; each new row's follow-up
    records (download or enrichment tasks) to ``follow_up_topic``; then the table's checks on
    what the run wrote."""
    batch = batch_for_run(context, topic, source_kafka)
    sink = EventLogSink(
        spec=spec,
        dead_letters=Topic(kafka, dlq_topic),
        dedup_window_days=pipeline.ingest.dedup_window_days,
        follow_up=Topic(kafka, follow_up_topic),
        follow_ups=follow_ups,
    )
    run = BatchContext(
        group_id=pipeline.consumer_group(spec.table),
        run_id=context.run.run_id,
        ingestion_date=batch.day,
        mode=batch.mode,
        report=IngestReport(),
        log=context.log,
    )
    report = consume_ranges(
        batch.ranges, sink=sink, source=source_kafka, lake=lake, context=run, batch_size=pipeline.ingest.max_events_per_run
    )
    return dg.MaterializeResult(
        metadata=ingest_metadata(report, source_kafka, batch.mode),
        check_results=event_log_checks(
            lake, spec.table, spec.key_columns, required_columns, run.run_id, pipeline.ingest.dedup_window_days, key_check
        ),
    )


@dataclass(frozen=True)
class RepairSource:
    """Where a backfill of a task asset finds a day's work: rows of an event table."""

    events_table: str
    event_columns: Sequence[str]
    tasks_from_events: Callable[[pl.DataFrame], Sequence[Any]]


def work_tasks(
    context: dg.AssetExecutionContext,
    *,
    sink: TaskSink,
    kafka: KafkaResource,
    lake: DeltaLakeResource,
    pipeline: PipelineConfigResource,
    asset_name: str,
    pending_topic: str,
    repair: RepairSource,
) -> tuple[IngestReport, IngestMode]:
    """A run of a task asset: the planned ranges of the task topic and its retry topics, or,
    without range tags (a backfill), the day's tasks derived again from the event table."""
    ranges = planned_ranges(context, [pending_topic, *(t for t, _ in pipeline.retry_topics(pending_topic))])
    run = BatchContext(
        group_id=pipeline.consumer_group(asset_name),
        run_id=context.run.run_id,
        ingestion_date=date.fromisoformat(context.partition_key),
        mode=IngestMode.STREAM if ranges is not None else IngestMode.BACKFILL,
        report=IngestReport(),
        log=context.log,
    )
    batch_size = pipeline.ingest.tasks_per_commit
    if ranges is not None:
        report = consume_ranges(ranges, sink=sink, source=kafka, lake=lake, context=run, batch_size=batch_size)
    else:
        report = repair_day(
            sink,
            lake,
            run,
            events_table=repair.events_table,
            event_columns=repair.event_columns,
            tasks_from_events=repair.tasks_from_events,
            batch_size=batch_size,
        )
    return report, run.mode


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def ingest_metadata(report: IngestReport, kafka: KafkaResource, mode: IngestMode) -> dict[str, Any]:
    """What the UI plots per materialization: rows, offsets, Delta version, lag."""
    metadata: dict[str, Any] = {
        "mode": mode.value,
        "rows_written": report.rows_written,
        "messages_read": report.messages_read,
        "dead_lettered": report.dead_lettered,
        "rejected_by_category": dg.MetadataValue.json(dict(report.rejected)),
        "already_committed": report.already_committed,
        "lost_to_retention": report.lost_to_retention,
        "planned_ranges": encode_ranges(report.planned) or "(none)",
        "read_ranges": encode_ranges(report.read) or "(none)",
        "delta_version": report.delta_version if report.delta_version is not None else -1,
        "commit_conflicts": report.commit_conflicts,
        **dict(report.counts),
    }
    lag: dict[str, int] = {}
    for topic in sorted({t for t, _ in report.watermarks}):
        try:
            states = kafka.partition_states(topic, kafka.connection.request_timeout_s)
        except KafkaUnavailableError:
            return metadata
        for (t, p), mark in report.watermarks.items():
            if t == topic and p in states:
                lag[f"{t}[{p}]"] = max(states[p].high - mark, 0)
    if lag:
        metadata["lag_total"] = sum(lag.values())
        metadata["lag_by_partition"] = dg.MetadataValue.json(lag)
    return metadata
