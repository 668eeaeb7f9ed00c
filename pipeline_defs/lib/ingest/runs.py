"""The run half of the offset-range protocol: a run turns its tags back into ranges (or, for a
backfill, its day into ranges), consumes them through a sink and reports what it did."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, Optional

import dagster as dg

from pipeline_defs.lib.delta.checks import RunScope, event_log_checks, written_by
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.dlq.records import DeadLetterTopic
from pipeline_defs.lib.ingest.consume import consume_ranges, repair_day, stream_positions
from pipeline_defs.lib.ingest.event_log import EventLogSink, EventLogSpec
from pipeline_defs.lib.ingest.feeds import KafkaFeed
from pipeline_defs.lib.ingest.sink import BatchContext, IngestMode, IngestReport
from pipeline_defs.lib.ingest.tasks import TaskSink
from pipeline_defs.lib.kafka.clients import KafkaUnavailableError
from pipeline_defs.lib.kafka.ranges import RANGES_TAG, TOPIC_TAG, OffsetRange, decode_ranges, encode_ranges
from pipeline_defs.lib.kafka.records import OutRecord, Topic
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import IngestConfigResource


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


def batch_for_run(
    context: dg.AssetExecutionContext, topic: str, kafka: KafkaResource, lake: DeltaLakeResource, table: str, group_id: str
) -> RunBatch:
    """Sensor runs carry their ranges in tags. A run without them re-reads its partition's
    day from Kafka, found by message timestamp, up to where the stream has read: what lies
    beyond is the stream's to ingest, so a backfill and the stream never both write an offset."""
    day = date.fromisoformat(context.partition_key)
    ranges = planned_ranges(context, [topic])
    if ranges is not None:
        return RunBatch(IngestMode.STREAM, day, ranges)
    start = datetime.combine(day, dtime.min, tzinfo=UTC)
    timeout = kafka.connection.request_timeout_s
    first = kafka.offsets_for_timestamp(topic, _ms(start), timeout)
    after = kafka.offsets_for_timestamp(topic, _ms(start + timedelta(days=1)), timeout)
    read_up_to = stream_positions(lake.load(table), topic, sorted(first), kafka, group_id)
    ranges = [
        OffsetRange(topic, p, first[p], min(after[p], read_up_to[p]))
        for p in sorted(first)
        if min(after[p], read_up_to[p]) > first[p]
    ]
    return RunBatch(IngestMode.BACKFILL, day, ranges)


@dataclass(frozen=True)
class EventTopics:
    events: str
    dead_letters: str
    follow_up: str  # where each new row's tasks go


@dataclass(frozen=True)
class TaskTopics:
    pending: str
    dead_letters: str


@dataclass(frozen=True)
class EventLogAsset:
    """An event-log asset as its batch runs and its streaming run share it: the feed it reads,
    the sink records go through (bad messages to the DLQ, each new row's follow-up records,
    download or enrichment tasks, to the follow-up topic) and what a run reports."""

    spec: EventLogSpec
    feed: KafkaFeed
    topics_of: Callable[[Any], EventTopics]  # resources -> topics
    follow_ups: Callable[[dict[str, Any]], Iterable[OutRecord]]
    required_columns: Sequence[str]
    key_check: str

    @property
    def resource_keys(self) -> set[str]:
        return {self.feed.cluster, "kafka", "lake", "files", "ingest", *self.feed.resource_keys}

    def sink(self, resources: Any) -> EventLogSink:
        topics = self.topics_of(resources)
        return EventLogSink(
            spec=self.spec,
            dead_letters=DeadLetterTopic(resources.kafka, topics.dead_letters, resources.files),
            dedup_window_days=resources.ingest.ingest.dedup_window_days,
            follow_up=Topic(resources.kafka, topics.follow_up),
            follow_ups=self.follow_ups,
        )

    def results(self, resources: Any, sink: Any, report: IngestReport, scope: RunScope) -> list[dg.MaterializeResult]:
        return [self.result(resources, report, IngestMode.STREAM, scope)]

    def result(self, resources: Any, report: IngestReport, mode: IngestMode, scope: RunScope) -> dg.MaterializeResult:
        window = resources.ingest.ingest.dedup_window_days
        return dg.MaterializeResult(
            metadata=ingest_metadata(report, getattr(resources, self.feed.cluster), mode),
            check_results=event_log_checks(
                resources.lake, self.spec.table, self.spec.key_columns, self.required_columns, scope, window, self.key_check
            ),
        )

    def materialize(self, context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """A batch run: its planned ranges (or, for a backfill, its day), then the table's
        checks on what the run's ranges wrote."""
        resources = context.resources
        source: KafkaResource = getattr(resources, self.feed.cluster)
        ingest: IngestConfigResource = resources.ingest
        group_id = self.feed.group_id(ingest)
        batch = batch_for_run(context, self.topics_of(resources).events, source, resources.lake, self.spec.table, group_id)
        run = BatchContext(
            group_id=group_id,
            run_id=context.run.run_id,
            ingestion_date=batch.day,
            mode=batch.mode,
            report=IngestReport(),
            log=context.log,
        )
        report = consume_ranges(
            batch.ranges,
            sink=self.sink(resources),
            source=source,
            lake=resources.lake,
            context=run,
            batch_size=ingest.ingest.max_events_per_run,
        )
        return self.result(resources, report, batch.mode, written_by(run, batch.ranges))


@dataclass(frozen=True)
class RepairSource:
    """Where a backfill of a task asset finds a day's work: rows of an event table."""

    events_table: str
    event_columns: Sequence[str]
    tasks_of_event: Callable[[dict[str, Any]], Sequence[Any]]


@dataclass(frozen=True)
class TaskRun:
    """What a run of a task asset did, and which rows its checks look at."""

    report: IngestReport
    mode: IngestMode
    scope: RunScope


def work_tasks(
    context: dg.AssetExecutionContext,
    *,
    sink: TaskSink[Any],
    kafka: KafkaResource,
    lake: DeltaLakeResource,
    ingest: IngestConfigResource,
    asset_name: str,
    pending_topic: str,
    repair: RepairSource,
) -> TaskRun:
    """A run of a task asset: the planned ranges of the task topic and its retry topics, or,
    without range tags (a backfill), the day's tasks derived again from the event table."""
    ranges = planned_ranges(context, [pending_topic, *(t for t, _ in ingest.retry_topics(pending_topic))])
    run = BatchContext(
        group_id=ingest.consumer_group(asset_name),
        run_id=context.run.run_id,
        ingestion_date=date.fromisoformat(context.partition_key),
        mode=IngestMode.STREAM if ranges is not None else IngestMode.BACKFILL,
        report=IngestReport(),
        log=context.log,
    )
    batch_size = ingest.ingest.tasks_per_commit
    if ranges is not None:
        report = consume_ranges(ranges, sink=sink, source=kafka, lake=lake, context=run, batch_size=batch_size)
    else:
        report = repair_day(
            sink,
            lake,
            run,
            events_table=repair.events_table,
            event_columns=repair.event_columns,
            tasks_of_event=repair.tasks_of_event,
            batch_size=batch_size,
        )
    return TaskRun(report, run.mode, written_by(run, ranges or []))


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
