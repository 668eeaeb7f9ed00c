"""Dead-letter records: a payload, with why and where-from in headers.

Modelled on Kafka Connect's ``__connect.errors.*`` headers, so standard tooling can read
them and a replay knows exactly which source record a dead letter stands for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Optional, Sequence

from confluent_kafka import Message

from pipeline_defs.lib.kafka import OutRecord

HEADER_PREFIX = "__dlq.errors."
MAX_REASON_CHARS = 1_000


class RejectedRecord(Exception):
    """A record that can never be processed as it is; it goes to a DLQ, the run goes on."""

    def __init__(self, category: str, reason: str):
        super().__init__(f"{category}: {reason}")
        self.category = category
        self.reason = reason


@dataclass(frozen=True)
class SourceRecord:
    """Where a dead letter came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int = -1

    @classmethod
    def of(cls, message: Message) -> "SourceRecord":
        _, timestamp_ms = message.timestamp()
        return cls(message.topic(), message.partition(), message.offset(), timestamp_ms)


def dead_letter_record(
    *,
    value: bytes,
    key: Optional[bytes],
    source: SourceRecord,
    category: str,
    reason: str,
    consumer_group: str,
    run_id: str,
    original_headers: Sequence[tuple[str, bytes]] = (),
    now: Optional[datetime] = None,
) -> OutRecord:
    failed_at = (now or datetime.now(timezone.utc)).isoformat()
    error_headers = {
        "topic": source.topic,
        "partition": str(source.partition),
        "offset": str(source.offset),
        "timestamp": str(source.timestamp_ms),
        "category": category,
        "reason": reason[:MAX_REASON_CHARS],
        "consumer.group": consumer_group,
        "run.id": run_id,
        "failed.at": failed_at,
    }
    kept = [(k, v) for k, v in original_headers if not k.startswith(HEADER_PREFIX)]
    headers = kept + [(HEADER_PREFIX + k, v.encode()) for k, v in error_headers.items()]
    return OutRecord(value=value, key=key, headers=headers)


def dead_letter(
    message: Message,
    rejection: RejectedRecord,
    *,
    consumer_group: str,
    run_id: str,
    now: Optional[datetime] = None,
) -> OutRecord:
    """The original message, bytes and headers untouched, plus the error headers."""
    return dead_letter_record(
        value=message.value() or b"",
        key=message.key(),
        source=SourceRecord.of(message),
        category=rejection.category,
        reason=rejection.reason,
        consumer_group=consumer_group,
        run_id=run_id,
        original_headers=message.headers() or [],
        now=now,
    )


def error_headers(message: Message) -> Mapping[str, str]:
    """The ``__dlq.errors.*`` headers of a dead-lettered message, without the prefix."""
    return {
        k[len(HEADER_PREFIX) :]: (v or b"").decode("utf-8", "replace")
        for k, v in (message.headers() or [])
        if k.startswith(HEADER_PREFIX)
    }
