"""Task topics on the way in and out of a run: tasks parsed from their messages (the
unreadable ones dead-lettered), failed tasks routed to the next retry topic or the DLQ.
Used by every task-consuming sink, so downloads and enrichments retry the same way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple, Optional, Sequence

from confluent_kafka import Message

from pipeline_defs.lib.dlq import RejectedRecord, SourceRecord, dead_letter
from pipeline_defs.lib.failures import TaskFailure
from pipeline_defs.lib.kafka import KafkaResource, OutRecord, Topic
from pipeline_defs.lib.kafka_to_delta import PARTITION_COLUMN, BatchContext
from pipeline_defs.lib.schemas.tasks import RetryableTask, parse_task, route_failure

Carried = tuple[RetryableTask, Optional[SourceRecord]]  # a task and the record that carried it


class Failed(NamedTuple):
    task: RetryableTask
    carrier: Optional[SourceRecord]
    failure: TaskFailure


@dataclass(frozen=True)
class Routed:
    destinations: list[str]  # the topic each failed task went to, in order
    dead_letter_topic: str

    @property
    def dead_lettered(self) -> int:
        return self.destinations.count(self.dead_letter_topic)

    @property
    def retries_scheduled(self) -> int:
        return len(self.destinations) - self.dead_lettered


@dataclass
class Retries:
    """Where failed tasks go: one topic per retry delay, then the DLQ."""

    kafka: KafkaResource
    retry_topics: Sequence[tuple[str, int]]
    dead_letter_topic: str

    @property
    def dead_letters(self) -> Topic:
        return Topic(self.kafka, self.dead_letter_topic)

    def route(self, failed: Sequence[Failed], context: BatchContext) -> Routed:
        by_topic: dict[str, list[OutRecord]] = {}
        destinations = []
        for item in failed:
            topic, record = route_failure(
                item.task,
                item.failure,
                retry_topics=self.retry_topics,
                dlq_topic=self.dead_letter_topic,
                carrier=item.carrier,
                consumer_group=context.group_id,
                run_id=context.run_id,
            )
            by_topic.setdefault(topic, []).append(record)
            destinations.append(topic)
        for topic, records in by_topic.items():
            self.kafka.produce(topic, records)
        return Routed(destinations, self.dead_letter_topic)


def parse_tasks(
    task_type: type[RetryableTask], messages: Sequence[Message], dead_letters: Topic, context: BatchContext
) -> list[Carried]:
    """The tasks the messages carry; messages that are not a valid task go to the DLQ."""
    tasks: list[Carried] = []
    rejected = []
    for message in messages:
        try:
            tasks.append((parse_task(task_type, message), SourceRecord.of(message)))
        except RejectedRecord as rejection:
            context.report.rejected[rejection.category] += 1
            rejected.append(dead_letter(message, rejection, consumer_group=context.group_id, run_id=context.run_id))
    if rejected:
        dead_letters.send(rejected)
    return tasks


def task_lineage(task: RetryableTask, carrier: Optional[SourceRecord], run_id: str, now: datetime) -> dict[str, Any]:
    """Lineage of the record that carried the task (the event itself for a backfill); the row's
    partition is its event's ingestion day, the same partition as in the event log."""
    source = carrier or SourceRecord(task.source.topic, task.source.partition, task.source.offset)
    return {
        "kafka_topic": source.topic,
        "kafka_partition": source.partition,
        "kafka_offset": source.offset,
        "kafka_timestamp": datetime.fromtimestamp(source.timestamp_ms / 1000, timezone.utc)
        if source.timestamp_ms > 0
        else None,
        "ingested_at": now,
        PARTITION_COLUMN: task.source.ingestion_date,
        "dagster_run_id": run_id,
    }
