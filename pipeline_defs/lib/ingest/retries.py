"""Task topics on the way in and out of a run: tasks parsed from their messages (the
unreadable ones dead-lettered), failed tasks routed to the next retry topic or the DLQ.
Used by every task-consuming sink, so downloads and enrichments retry the same way."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, Optional

from pipeline_defs.lib.dlq.records import ClaimStore, DeadLetterTopic, SourceRecord, dead_letter_record
from pipeline_defs.lib.ingest.failures import TaskFailure
from pipeline_defs.lib.ingest.guard import RejectedRecord, guarded
from pipeline_defs.lib.ingest.sink import PARTITION_COLUMN, BatchContext
from pipeline_defs.lib.ingest.tasks import Carried, RetryableTask, TaskT, route_failure
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import IngestConfigResource
from pipeline_defs.lib.validation.timestamps import from_epoch_ms


class Failed(NamedTuple, Generic[TaskT]):
    task: TaskT
    carrier: Optional[SourceRecord]
    failure: TaskFailure

    @property
    def carried(self) -> Carried[TaskT]:
        return self.task, self.carrier


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
    dead_letters: DeadLetterTopic

    @classmethod
    def of_task_topic(
        cls, kafka: KafkaResource, ingest: IngestConfigResource, pending_topic: str, dlq_topic: str, claims: ClaimStore
    ) -> Retries:
        """The retry topics of ``pending_topic`` (one per configured delay), then ``dlq_topic``."""
        return cls(kafka, ingest.retry_topics(pending_topic), DeadLetterTopic(kafka, dlq_topic, claims))

    @property
    def dead_letter_topic(self) -> str:
        return self.dead_letters.name

    def route(self, failed: Sequence[Failed[Any]], context: BatchContext) -> Routed:
        by_topic: dict[str, list[OutRecord]] = {}
        destinations = []
        for item in failed:
            topic, record = self._routed(item, context)
            by_topic.setdefault(topic, []).append(record)
            destinations.append(topic)
        for topic, records in by_topic.items():
            if topic == self.dead_letter_topic:
                self.dead_letters.send(records)
            else:
                self.kafka.produce(topic, records)
        return Routed(destinations, self.dead_letter_topic)

    def _routed(self, item: Failed[Any], context: BatchContext) -> tuple[str, OutRecord]:
        """The next topic and record of a failed task; if building them breaks, a dead letter
        naming the task by its key, with both reasons."""
        routed = guarded(
            "route the failed task",
            lambda: route_failure(
                item.task,
                item.failure,
                retry_topics=self.retry_topics,
                dlq_topic=self.dead_letter_topic,
                carrier=item.carrier,
                consumer_group=context.group_id,
                run_id=context.run_id,
            ),
        )
        if not isinstance(routed, RejectedRecord):
            return routed
        source = item.carrier or SourceRecord(item.task.source.topic, item.task.source.partition, item.task.source.offset)
        return self.dead_letter_topic, dead_letter_record(
            value=json.dumps({"task_key": list(item.task.key)}).encode(),
            key=None,
            source=source,
            category=routed.category,
            reason=f"{item.failure.code}: {item.failure.detail}; {routed.reason}",
            consumer_group=context.group_id,
            run_id=context.run_id,
        )


def task_lineage(task: RetryableTask, carrier: Optional[SourceRecord], run_id: str, now: datetime) -> dict[str, Any]:
    """Lineage of the record that carried the task (the event itself for a backfill); the row's
    partition is its event's ingestion day, the same partition as in the event log."""
    source = carrier or SourceRecord(task.source.topic, task.source.partition, task.source.offset)
    return {
        "kafka_topic": source.topic,
        "kafka_partition": source.partition,
        "kafka_offset": source.offset,
        "kafka_timestamp": from_epoch_ms(source.timestamp_ms),
        "ingested_at": now,
        PARTITION_COLUMN: task.source.ingestion_date,
        "dagster_run_id": run_id,
    }
