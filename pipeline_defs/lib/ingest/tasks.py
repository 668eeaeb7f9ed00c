"""Retryable work items (a download, an enrichment), their failure records, and where a
failure goes: the next retry topic, or the DLQ."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, Optional, TypeVar

import pyarrow as pa
from confluent_kafka import Message
from pydantic import BaseModel, ConfigDict, Field

from pipeline_defs.lib.dlq.records import SourceRecord, dead_letter_record
from pipeline_defs.lib.ingest.failures import TaskFailure
from pipeline_defs.lib.ingest.sink import PARTITION_COLUMN, BatchContext, RecordSink
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.settings import StreamSettings
from pipeline_defs.lib.validation.fields import UtcDatetime, parsed


class SourceEvent(BaseModel):
    """The event a task belongs to: its Kafka coordinates and ingestion day."""

    topic: str
    partition: int
    offset: int
    ingestion_date: date

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> SourceEvent:
        """From an event-log row's lineage columns."""
        return cls(
            topic=row["kafka_topic"],
            partition=row["kafka_partition"],
            offset=row["kafka_offset"],
            ingestion_date=row[PARTITION_COLUMN],
        )


class Attempt(BaseModel):
    attempt: int
    at: UtcDatetime
    category: str
    code: str
    detail: str


class RetryableTask(BaseModel):
    """One unit of work; ``retry_count`` failed attempts so far, each in ``history``."""

    model_config = ConfigDict(extra="ignore")

    source: SourceEvent
    retry_count: int = Field(default=0, ge=0)
    history: list[Attempt] = Field(default_factory=list)

    @property
    @abstractmethod
    def key(self) -> tuple[str, ...]:
        """What the task is about, e.g. the inventory merge key; its DLQ entry id."""

    @property
    @abstractmethod
    def message_key(self) -> bytes:
        """Kafka key: keeps an entity's tasks in one partition."""

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    def without_credentials(self) -> RetryableTask:
        """The task as a DLQ may keep it: long-lived, browsed by operators. Tasks carrying a
        short-lived credential (a presigned link) drop it; a replay fetches a fresh one."""
        return self

    def after_failure(self, failure: TaskFailure, retry_count: int, now: datetime) -> RetryableTask:
        attempt = Attempt(
            attempt=len(self.history) + 1,
            at=now,
            category=failure.category.value,
            code=failure.code,
            detail=failure.detail,
        )
        return self.model_copy(update={"retry_count": retry_count, "history": [*self.history, attempt]})


class FailedTask(BaseModel):
    """What a task DLQ holds: the task with its whole retry history, and the last error."""

    task: dict[str, Any]
    error_category: str
    error_code: str
    final_error: str
    retry_count: int
    failed_at: UtcDatetime


def parse_task(task_type: type[RetryableTask], message: Message) -> RetryableTask:
    return parsed(task_type, message.value() or b"")


def route_failure(
    task: RetryableTask,
    failure: TaskFailure,
    *,
    retry_topics: Sequence[tuple[str, int]],
    dlq_topic: str,
    carrier: Optional[SourceRecord],
    consumer_group: str,
    run_id: str,
    now: Optional[datetime] = None,
) -> tuple[str, OutRecord]:
    """Transient and circuit-open failures wait in the next retry topic (a later one if the
    remote side asked for a longer Retry-After); permanent, auth and exhausted ones go to the DLQ."""
    now = now or datetime.now(UTC)
    retryable = failure.category.retryable
    level = task.retry_count
    if failure.retry_after_s is not None:
        waits = [i for i, (_, delay) in enumerate(retry_topics) if delay >= failure.retry_after_s]
        level = max(level, waits[0] if waits else len(retry_topics) - 1)
    if retryable and level < len(retry_topics):
        next_task = task.after_failure(failure, retry_count=level + 1, now=now)
        return retry_topics[level][0], OutRecord(value=next_task.encode(), key=task.message_key)
    final = task.after_failure(failure, retry_count=task.retry_count, now=now)
    reason = f"{failure.code}: {failure.detail}"
    if retryable:
        reason = f"retries exhausted after {len(final.history)} attempts; last {reason}"
    payload = FailedTask(
        task=final.without_credentials().model_dump(mode="json"),
        error_category=failure.category.value,
        error_code=failure.code,
        final_error=reason,
        retry_count=final.retry_count,
        failed_at=now,
    )
    source = carrier or SourceRecord(task.source.topic, task.source.partition, task.source.offset)
    record = dead_letter_record(
        value=payload.model_dump_json().encode(),
        key=task.message_key,
        source=source,
        category=failure.category.value,
        reason=reason,
        consumer_group=consumer_group,
        run_id=run_id,
        now=now,
    )
    return dlq_topic, record


TaskT = TypeVar("TaskT", bound=RetryableTask)
Carried = tuple[TaskT, Optional[SourceRecord]]  # a task and the Kafka record that carried it (None: a backfill)


class TaskSink(RecordSink[TaskT]):
    """A sink whose messages carry tasks; a backfill hands it tasks derived from a table."""

    def prepare(self, message: Message, context: BatchContext) -> TaskT:
        return parse_task(self.task_type, message)  # type: ignore[return-value]

    def finish(self, items: Sequence[tuple[Message, TaskT]], context: BatchContext) -> pa.Table:
        return self.process([(task, SourceRecord.of(message)) for message, task in items], context)

    def micro_batch_wait_s(self, stream: StreamSettings) -> float:
        return stream.task_batch_max_wait_s

    @property
    @abstractmethod
    def task_type(self) -> type[TaskT]: ...

    @abstractmethod
    def process(self, tasks: Sequence[Carried[TaskT]], context: BatchContext) -> pa.Table:
        """Do the tasks (side effects included) and return the rows to commit."""
