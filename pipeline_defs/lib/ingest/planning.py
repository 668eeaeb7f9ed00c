"""Why a sensor plans nothing, or less: a failed blocking check upstream, a stalled range, a
cursor it cannot read, partitions whose log end fell below the cursor; and the due part of a
retry topic."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Optional

import dagster as dg

from pipeline_defs.lib.ingest.feeds import SensorTopic
from pipeline_defs.lib.kafka.clients import KafkaUnavailableError
from pipeline_defs.lib.kafka.ranges import (
    RANGES_TAG,
    TOPIC_TAG,
    PartitionState,
    decode_cursor,
    decode_ranges,
)
from pipeline_defs.lib.kafka.resource import KafkaResource

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]

# The metadata an operator's offset reset commits with the group's offsets; a sensor whose
# cursor is past a partition's log end adopts offsets committed with it.
RESET_MARK = "pipeline-offset-reset"


def failed_check(instance: dg.DagsterInstance, checks: Sequence[dg.AssetCheckKey]) -> Optional[str]:
    """Why planning waits, if the latest evaluation of one of ``checks`` failed."""
    for key in checks:
        latest = instance.get_latest_asset_check_evaluation_record(key)
        if latest is not None and latest.status.value == "FAILED":
            return (
                f"blocking check {key.asset_key.to_user_string()}:{key.name} failed in run {latest.run_id}; "
                "the work waits in Kafka until a later run passes it"
            )
    return None


def stalled(instance: dg.DagsterInstance, job_name: str, failures: int, probe_interval_s: float) -> Optional[str]:
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


def partitions_in_use(instance: dg.DagsterInstance, job_name: str, topic: str) -> tuple[set[int], set[int]]:
    """For planning several writers: the partitions of ``topic`` that runs of the job queued or
    running were planned on, and those of the job's newest run on it (whose slot goes last, so
    slots take turns when the budget is one run)."""
    in_flight = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT, tags={TOPIC_TAG: topic}))
    busy = {p for run in in_flight for p in _planned_partitions(run, topic)}
    newest = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, tags={TOPIC_TAG: topic}), limit=1)
    return busy, {p for run in newest for p in _planned_partitions(run, topic)}


def _planned_partitions(run: dg.DagsterRun, topic: str) -> set[int]:
    """A run whose ranges tag cannot be read holds none: it fails before it reads anything."""
    try:
        return {r.partition for r in decode_ranges(topic, run.tags.get(RANGES_TAG, ""))}
    except ValueError:
        return set()


def readable_cursor(context: dg.SensorEvaluationContext) -> dict[str, dict[int, int]]:
    """The cursor, or an empty one if it cannot be read (planning then restarts from the
    committed offsets; ranges planned twice are absorbed by the watermarks)."""
    try:
        return decode_cursor(context.cursor)
    except ValueError as exc:
        context.log.warning(f"sensor cursor unreadable ({exc}); planning restarts from the committed offsets")
        return {}


def remaining(deadline: float, kafka: KafkaResource) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise KafkaUnavailableError("tick budget spent before the broker answered")
    return min(left, kafka.connection.request_timeout_s)


def due_states(
    kafka: KafkaResource, topic: SensorTopic, states: Mapping[int, PartitionState], deadline: float
) -> dict[int, PartitionState]:
    if topic.delay_s is None:
        return dict(states)
    cutoff_ms = int((time.time() - topic.delay_s) * 1000)
    due = kafka.offsets_for_timestamp(topic.name, cutoff_ms, remaining(deadline, kafka))
    return {p: PartitionState(s.low, min(s.high, due.get(p, s.high))) for p, s in states.items()}


def past_log_end(
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
    committed = kafka.committed_with_metadata(group_id, topic, list(stranded), remaining(deadline, kafka))
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
