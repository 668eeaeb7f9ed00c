"""The planning half of the offset-range protocol: sensors plan Kafka offset ranges into run
tags; they read offsets and their cursor and never commit consumer offsets.

Every Kafka-fed asset is a ``KafkaFeed``: the topics it reads, the cluster they are on, the
Delta table holding its watermarks. Sensors, the offset reset job and the stream health checks
are all built from feeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Optional, Sequence

import dagster as dg

from pipeline_defs.lib.kafka import KafkaResource, KafkaUnavailableError
from pipeline_defs.lib.offset_ranges import (
    EVENTS_TAG,
    RANGES_TAG,
    TOPIC_TAG,
    OffsetRange,
    PartitionState,
    decode_cursor,
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
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]

# The sensor daemon wakes every 5 s and ticks a sensor whose interval has elapsed since its
# last tick started; 4 s makes every wake-up tick (5 s would skip every other one: 10 s).
SENSOR_INTERVAL_S = 4

# The metadata an operator's offset reset commits with the group's offsets; a sensor whose
# cursor is past a partition's log end adopts offsets committed with it.
RESET_MARK = "pipeline-offset-reset"


@dataclass(frozen=True)
class SensorTopic:
    name: str
    delay_s: Optional[int] = None  # a retry topic: only records older than this are due


@dataclass(frozen=True)
class KafkaFeed:
    """A Kafka-fed asset: its topics, the cluster they live on, the table holding its
    watermarks (also its asset key), and its consumer group (``<prefix>.<asset_name>``)."""

    asset_name: str
    table: str
    topics_of: Callable[[PipelineConfigResource], Sequence[SensorTopic]]
    cluster: str = "kafka"  # resource key: "source_kafka" for the source events

    def group_id(self, pipeline: PipelineConfigResource) -> str:
        return pipeline.consumer_group(self.asset_name)


def build_offset_range_sensor(
    *,
    name: str,
    job: Any,
    feed: KafkaFeed,
    description: str,
    partitioned: bool = True,
    gated_by: Sequence[dg.AssetCheckKey] = (),
) -> dg.SensorDefinition:
    """A sensor that plans the unplanned (and, for retry topics, due) offsets of its feed's
    topics into partitioned runs, one topic per run. It plans nothing, and says why in its skip
    reason, while: the job has ``max_runs_in_flight`` runs queued or running (backpressure: a
    backlog makes the next runs bigger, not the queue longer); the latest evaluation of a
    ``gated_by`` check failed (the work waits in Kafka); the job's last runs all failed (a
    stalled range, probed again every ``stall_probe_interval_s``); the broker does not answer
    within ``tick_budget_s`` (cursor kept). A partition whose log end fell below the cursor (a
    recreated or truncated topic) is left alone until ``kafka_offsets_reset_job`` resets it.
    Delayed topics are not polled in a loop: the due range of a delay-d topic simply ends at
    the first offset written after now - d.
    """

    @dg.sensor(
        name=name,
        job=job,
        description=description,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={feed.cluster, "pipeline"},
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        kafka: KafkaResource = getattr(context.resources, feed.cluster)
        pipeline: PipelineConfigResource = context.resources.pipeline
        ingest = pipeline.ingest
        deadline = time.monotonic() + ingest.tick_budget_s
        in_flight = context.instance.get_runs_count(dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT))
        run_budget = min(ingest.max_runs_per_tick, ingest.max_runs_in_flight - in_flight)
        if run_budget <= 0:
            return dg.SkipReason(f"{in_flight} {job.name} runs queued or running; planning waits for them")
        waiting = _failed_check(context.instance, gated_by) or _stalled(
            context.instance, job.name, ingest.stall_after_failed_runs, ingest.stall_probe_interval_s
        )
        if waiting is not None:
            return dg.SkipReason(waiting)
        cursor = _readable_cursor(context)
        partition_key = datetime.now(timezone.utc).date().isoformat() if partitioned else None
        requests: list[dg.RunRequest] = []
        notes: list[str] = []
        try:
            for topic in feed.topics_of(pipeline):
                budget = run_budget - len(requests)
                if budget <= 0:
                    break
                states = kafka.partition_states(topic.name, _remaining(deadline, kafka))
                planned = cursor.setdefault(topic.name, {})
                new = [p for p in states if p not in planned]
                if new:
                    planned.update(_first_offsets(kafka, pipeline, feed.group_id(pipeline), topic.name, new, states, deadline))
                states, stranded = _past_log_end(kafka, feed.group_id(pipeline), topic.name, planned, states, deadline)
                notes += stranded
                plan = plan_runs(topic.name, planned, _due(kafka, topic, states, deadline), ingest.max_events_per_run, budget)
                for partition, lost in plan.skipped_to_low_watermark.items():
                    context.log.warning(f"{topic.name}[{partition}]: {lost} offsets expired before planning")
                cursor[topic.name] = plan.next_offsets
                requests += [_run_request(topic.name, ranges, partition_key) for ranges in plan.runs]
        except KafkaUnavailableError as exc:
            return dg.SkipReason(f"Kafka unavailable; nothing planned, cursor kept: {exc}")
        for note in notes:
            context.log.warning(note)
        if not requests:
            return dg.SensorResult(cursor=encode_cursor(cursor), skip_reason="; ".join(notes) or "no new offsets")
        return dg.SensorResult(run_requests=requests, cursor=encode_cursor(cursor))

    return _sensor


def build_task_sensors(
    *,
    name: str,
    job: Any,
    feed: KafkaFeed,
    retry_feed: KafkaFeed,
    what: str,
    gated_by: Sequence[dg.AssetCheckKey] = (),
) -> tuple[dg.SensorDefinition, dg.SensorDefinition]:
    """The two sensors of a task topic: new tasks (``feed``), and the due part of its retry
    topics (``retry_feed``, same group and table); both wait while a ``gated_by`` check of the
    asset that made the tasks has failed."""
    pending = build_offset_range_sensor(
        name=f"{name}_pending_sensor",
        job=job,
        feed=feed,
        description=f"Plans new {what} into {feed.asset_name} runs.",
        gated_by=gated_by,
    )
    retries = build_offset_range_sensor(
        name=f"{name}_retry_sensor",
        job=job,
        feed=retry_feed,
        description=f"Plans the due part of each retry topic of {what} (tasks that have waited their delay) into {feed.asset_name} runs.",
        gated_by=gated_by,
    )
    return pending, retries


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


def _stalled(instance: dg.DagsterInstance, job_name: str, failures: int, probe_interval_s: float) -> Optional[str]:
    """Why planning pauses, if the job's last ``failures`` finished runs all failed and the
    latest failed less than ``probe_interval_s`` ago: which ranges, and the error."""
    if failures <= 0:
        return None
    recent = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=FINISHED), limit=failures)
    if len(recent) < failures or any(run.status != dg.DagsterRunStatus.FAILURE for run in recent):
        return None
    latest = recent[0]
    record = instance.get_run_record_by_id(latest.run_id)
    ended = record.end_time if record is not None and record.end_time else time.time()
    if time.time() - ended >= probe_interval_s:
        return None  # time for a probe: the sensor plans again
    ranges = sorted({f"{run.tags.get(TOPIC_TAG, '?')}@{run.tags.get(RANGES_TAG, '(backfill)')}" for run in recent})
    return (
        f"stalled: the last {failures} {job_name} runs failed (latest {latest.run_id}; ranges {', '.join(ranges)}): "
        f"{_failure_message(instance, latest.run_id)}. Planning resumes with one probe every {probe_interval_s:.0f} s, "
        "or as soon as a run succeeds (fix the cause, then re-execute the failed run)"
    )


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    for event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
        for entry in reversed(instance.all_logs(run_id, of_type=event_type)):
            event = entry.dagster_event
            data = getattr(event, "event_specific_data", None) if event is not None else None
            error = getattr(data, "error", None)
            if error is not None:
                return f"{error.cls_name}: {error.message.strip()[:300]}"
            if event is not None and event.message:
                return event.message[:300]
    return "no error recorded"


def _readable_cursor(context: dg.SensorEvaluationContext) -> dict[str, dict[int, int]]:
    """The cursor, or an empty one if it cannot be read (planning then restarts from the
    committed offsets; ranges planned twice are absorbed by the watermarks)."""
    try:
        return decode_cursor(context.cursor)
    except ValueError as exc:
        context.log.warning(f"sensor cursor unreadable ({exc}); planning restarts from the committed offsets")
        return {}


def _remaining(deadline: float, kafka: KafkaResource) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise KafkaUnavailableError("tick budget spent before the broker answered")
    return min(left, kafka.connection.request_timeout_s)


def _due(kafka: KafkaResource, topic: SensorTopic, states: Mapping[int, PartitionState], deadline: float) -> dict[int, PartitionState]:
    if topic.delay_s is None:
        return dict(states)
    cutoff_ms = int((time.time() - topic.delay_s) * 1000)
    due = kafka.offsets_for_timestamp(topic.name, cutoff_ms, _remaining(deadline, kafka))
    return {p: PartitionState(s.low, min(s.high, due.get(p, s.high))) for p, s in states.items()}


def _past_log_end(
    kafka: KafkaResource,
    group_id: str,
    topic: str,
    planned: dict[int, int],
    states: Mapping[int, PartitionState],
    deadline: float,
) -> tuple[dict[int, PartitionState], list[str]]:
    """Partitions whose log end fell below the cursor (the topic was recreated or truncated)
    are left out of planning, with a note saying so, unless an operator reset their offsets:
    then planning starts there."""
    stranded = {p: n for p, n in planned.items() if p in states and n > states[p].high}
    if not stranded:
        return dict(states), []
    committed = kafka.committed_with_metadata(group_id, topic, list(stranded), _remaining(deadline, kafka))
    notes = []
    for partition, next_offset in stranded.items():
        offset, metadata = committed.get(partition, (-1, ""))
        if metadata.startswith(RESET_MARK) and 0 <= offset <= states[partition].high:
            planned[partition] = offset
        else:
            notes.append(
                f"{topic}[{partition}]: log end {states[partition].high} is below the next planned offset {next_offset} "
                "(topic recreated or truncated); nothing is planned there until kafka_offsets_reset_job resets it"
            )
    still = {p for p in stranded if planned[p] > states[p].high}
    return {p: s for p, s in states.items() if p not in still}, notes


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
