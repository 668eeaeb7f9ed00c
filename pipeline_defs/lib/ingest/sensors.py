"""The planning half of the offset-range protocol: sensors plan Kafka offset ranges into run
tags; they read offsets and their cursor and never commit consumer offsets.

Every Kafka-fed asset is a ``KafkaFeed``: the topics it reads, the cluster they are on, the
Delta table holding its watermarks. Sensors, the offset reset job and the stream health checks
are all built from feeds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Optional

import dagster as dg

from pipeline_defs.lib.ingest.feeds import KafkaFeed
from pipeline_defs.lib.ingest.planning import (
    IN_FLIGHT,
    due_states,
    failed_check,
    partitions_in_use,
    past_log_end,
    readable_cursor,
    remaining,
    stalled,
)
from pipeline_defs.lib.ingest.stream_jobs import streaming_run
from pipeline_defs.lib.kafka.clients import KafkaUnavailableError
from pipeline_defs.lib.kafka.ranges import (
    EVENTS_TAG,
    RANGES_TAG,
    SLOT_TAG,
    TOPIC_TAG,
    OffsetRange,
    PartitionState,
    encode_cursor,
    encode_ranges,
    plan_disjoint_runs,
    run_key,
    writer_slot,
)
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import IngestConfigResource

# The sensor daemon wakes every 5 s and ticks a sensor whose interval has elapsed since its
# last tick started, so 14 s ticks every third wake-up (15 s). Seconds-level latency is the
# streaming runs' job; the batch path plans backfill-sized runs, and every tick costs the
# daemon and the code server an instance, the resources and a tick record: at 4 s the batch
# sensors alone cost the idle pipeline ~0.1 cores (py-spy, 2026-12-04).
SENSOR_INTERVAL_S = 14
# Feeds where seconds do not matter (retry topics wait minutes, DLQ views are read by people):
# each tick costs broker and instance round trips, which add up to most of an idle pipeline's CPU.
SLOW_SENSOR_INTERVAL_S = 59  # ticks every 12th wake-up (60 s); 60 would wait for the 13th


def build_offset_range_sensor(
    *,
    name: str,
    job: Any,
    feed: KafkaFeed,
    description: str,
    partitioned: bool = True,
    gated_by: Sequence[dg.AssetCheckKey] = (),
    streamed: bool = False,
    interval_s: int = SENSOR_INTERVAL_S,
) -> dg.SensorDefinition:
    """A sensor that plans the unplanned (and, for retry topics, due) offsets of its feed's
    topics into partitioned runs, one topic per run. It plans nothing, and says why in its skip
    reason, while: the job has ``max_runs_in_flight`` runs queued or running (backpressure: a
    backlog makes the next runs bigger, not the queue longer); the latest evaluation of a
    ``gated_by`` check failed (the work waits in Kafka); the job's last runs all failed (a
    stalled range, probed again every ``stall_probe_interval_s``); the broker does not answer
    within ``tick_budget_s`` (cursor kept). A partition whose log end fell below the cursor (a
    recreated or truncated topic) is left alone until ``kafka_offsets_reset_job`` resets it.
    With ``writers_per_table`` > 1 the runs that may write at once get disjoint partitions
    (``plan_disjoint_runs``). Delayed topics are not polled in a loop: the due range of a
    delay-d topic simply ends at the first offset written after now - d.

    A ``streamed`` feed also has a streaming run (``stream_jobs``): while one is in flight this
    sensor gives way, and when planning resumes its cursor first catches up with the offsets
    the stream committed, so the stream's work is not planned again.
    """

    @dg.sensor(
        name=name,
        job=job,
        description=description,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={feed.cluster, "ingest", *feed.resource_keys},
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        kafka: KafkaResource = getattr(context.resources, feed.cluster)
        config: IngestConfigResource = context.resources.ingest
        ingest = config.ingest
        group_id = feed.group_id(config)
        deadline = time.monotonic() + ingest.tick_budget_s
        stream = streaming_run(context.instance, feed) if streamed and ingest.stream.enabled else None
        if stream is not None:
            return dg.SkipReason(f"streaming run {stream} consumes this feed; planning resumes when it stops")
        in_flight = context.instance.get_runs_count(dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT))
        run_budget = min(ingest.max_runs_per_tick, ingest.max_runs_in_flight - in_flight)
        if run_budget <= 0:
            return dg.SkipReason(f"{in_flight} {job.name} runs queued or running; planning waits for them")
        waiting = failed_check(context.instance, gated_by) or stalled(
            context.instance, job.name, ingest.stall_after_failed_runs, ingest.stall_probe_interval_s
        )
        if waiting is not None:
            return dg.SkipReason(waiting)
        cursor = readable_cursor(context)
        partition_key = datetime.now(UTC).date().isoformat() if partitioned else None
        requests: list[dg.RunRequest] = []
        notes: list[str] = []
        try:
            for topic in feed.topics_of(context.resources):
                budget = run_budget - len(requests)
                if budget <= 0:
                    break
                states = kafka.partition_states(topic.name, remaining(deadline, kafka))
                planned = cursor.setdefault(topic.name, {})
                new = [p for p in states if p not in planned]
                if new:
                    planned.update(_first_offsets(kafka, ingest.start_from, group_id, topic.name, new, states, deadline))
                if streamed and ingest.stream.enabled and any(states[p].high > o for p, o in planned.items() if p in states):
                    _catch_up(kafka, group_id, topic.name, planned, deadline)
                states, stranded = past_log_end(kafka, group_id, topic.name, planned, states, deadline)
                notes += stranded
                writers = ingest.writers_per_table
                busy, last = partitions_in_use(context.instance, job.name, topic.name) if writers > 1 else (set(), set())
                plan = plan_disjoint_runs(
                    topic.name,
                    planned,
                    due_states(kafka, topic, states, deadline),
                    ingest.max_events_per_run,
                    budget,
                    writers,
                    busy,
                    last,
                )
                for partition, lost in plan.skipped_to_low_watermark.items():
                    context.log.warning(f"{topic.name}[{partition}]: {lost} offsets expired before planning")
                cursor[topic.name] = plan.next_offsets
                requests += [_run_request(topic.name, ranges, partition_key, writers) for ranges in plan.runs]
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
        streamed=True,
    )
    retries = build_offset_range_sensor(
        name=f"{name}_retry_sensor",
        job=job,
        feed=retry_feed,
        description=f"Plans the due part of each retry topic of {what} (tasks that have waited their delay) into {feed.asset_name} runs.",
        gated_by=gated_by,
        interval_s=SLOW_SENSOR_INTERVAL_S,
    )
    return pending, retries


def blocking_checks(asset: dg.AssetsDefinition) -> list[dg.AssetCheckKey]:
    """The blocking checks an asset's runs evaluate: the gates of the work it hands on."""
    return [spec.key for spec in asset.check_specs if spec.blocking]


def _run_request(topic: str, ranges: Sequence[OffsetRange], partition_key: Optional[str], writers: int) -> dg.RunRequest:
    """With several writers the run names its slot: the run queue runs one per slot at a time,
    so a retry or re-execution (which keep the tags) waits for the slot's newer run, or it for them."""
    slot = {SLOT_TAG: f"{topic}:{writer_slot(ranges, writers)}/{writers}"} if writers > 1 else {}
    return dg.RunRequest(
        run_key=run_key(topic, ranges),
        partition_key=partition_key,
        tags={TOPIC_TAG: topic, RANGES_TAG: encode_ranges(ranges), EVENTS_TAG: str(sum(r.size for r in ranges)), **slot},
    )


def _catch_up(kafka: KafkaResource, group_id: str, topic: str, planned: dict[int, int], deadline: float) -> None:
    """Move the cursor up to offsets the group committed (a streaming run's progress). Only
    work already in Delta is committed, so this never skips anything unwritten."""
    committed = kafka.committed_offsets(group_id, topic, list(planned), remaining(deadline, kafka))
    planned.update({p: max(offset, committed.get(p, offset)) for p, offset in planned.items()})


def _first_offsets(
    kafka: KafkaResource,
    start_from: str,
    group_id: str,
    topic: str,
    partitions: list[int],
    states: Mapping[int, PartitionState],
    deadline: float,
) -> dict[int, int]:
    """Where planning starts for partitions the cursor has never seen: the group's committed
    offset, else the log start (``earliest``) or end (``latest``). For ``latest`` the start is
    committed, so runs that find no Delta watermark begin there too."""
    committed = kafka.committed_offsets(group_id, topic, partitions, remaining(deadline, kafka))
    latest = start_from == "latest"
    chosen = {p: committed.get(p, states[p].high if latest else states[p].low) for p in partitions}
    if latest:
        kafka.commit_offsets(group_id, {(topic, p): o for p, o in chosen.items() if p not in committed})
    return chosen
