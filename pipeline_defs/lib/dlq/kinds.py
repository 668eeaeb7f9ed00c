"""The two kinds of dead-letter topic: those holding original records (bad events), replayed as
the exact bytes to their source topic, and those holding failed tasks, replayed to their pending
topic with the retry count reset."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Optional

from confluent_kafka import Message

from pipeline_defs.lib.dlq.records import (
    CLAIM_CHECK_HEADER,
    ClaimStore,
    claimed_original,
)
from pipeline_defs.lib.dlq.views import DeadLetter, DlqViewSpec, decode_headers, entry_for_source
from pipeline_defs.lib.ingest.tasks import RetryableTask
from pipeline_defs.lib.kafka.records import OutRecord


def record_dlq(name: str, topic_of: Callable[[Any], str], resource_key: str, replay_cluster: str) -> DlqViewSpec:
    """A DLQ holding original records (bad events): replay re-sends the exact bytes, key and
    headers to the topic they came from, on ``replay_cluster`` (the source events' cluster)."""
    return DlqViewSpec(
        name=name,
        topic_of=topic_of,
        describe=entry_for_source,
        replay_record=resend_original,
        resource_keys=frozenset({resource_key}),
        replay_cluster=replay_cluster,
    )


def resend_original(row: dict[str, Any], _: Any, claims: ClaimStore) -> tuple[str, OutRecord]:
    """The exact bytes, key and headers, back to the topic they came from (read back from the
    claim check when the dead letter holds only a reference)."""
    headers = decode_headers(row["payload_headers"])
    claim = dict(headers).get(CLAIM_CHECK_HEADER)
    if claim is not None:
        return row["source_topic"], claimed_original(claims, claim.decode())
    return row["source_topic"], OutRecord(row["payload"] or b"", row["payload_key"], headers)


def task_dlq(
    name: str,
    topic_of: Callable[[Any], str],
    pending_of: Callable[[Any], str],
    task_type: type[RetryableTask],
    resource_key: str,
) -> DlqViewSpec:
    """A DLQ holding failed tasks (downloads, enrichments): one entry per task key; replay puts
    the task back on its pending topic with its retry count reset (its history kept). The same
    topic also receives pending-topic messages that were no task at all (their original bytes):
    those are entries of their source record, and replay re-sends them as they were."""

    def failed_task(payload: Optional[bytes]) -> Optional[tuple[int, Any]]:
        try:
            failed = json.loads(payload or b"")
            return int(failed.get("retry_count", 0)), task_type.model_validate(failed["task"])
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):  # ValidationError is a ValueError
            return None

    def describe(message: Message) -> DeadLetter:
        parsed = failed_task(message.value())
        if parsed is None:
            return entry_for_source(message)
        retry_count, task = parsed
        return DeadLetter(entry_id="|".join(task.key), item_id=task.key[0], retry_count=retry_count)

    def replay_record(row: dict[str, Any], resources: Any, claims: ClaimStore) -> tuple[str, OutRecord]:
        parsed = failed_task(row["payload"])
        if parsed is None:
            return resend_original(row, resources, claims)
        task = parsed[1].model_copy(update={"retry_count": 0})
        return pending_of(resources), OutRecord(task.encode(), task.message_key)

    return DlqViewSpec(
        name=name, topic_of=topic_of, describe=describe, replay_record=replay_record, resource_keys=frozenset({resource_key})
    )
