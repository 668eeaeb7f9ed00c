"""Dead-letter records: the original bytes, with why and where-from in headers.

Modelled on Kafka Connect's ``__connect.errors.*`` headers, so standard tooling can
read them and a replay can rebuild the original record exactly.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Mapping, Optional

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


def dead_letter(
    message: Message,
    rejection: RejectedRecord,
    *,
    consumer_group: str,
    run_id: str,
    now: Optional[datetime] = None,
) -> OutRecord:
    _, timestamp_ms = message.timestamp()
    failed_at = (now or datetime.now(timezone.utc)).isoformat()
    error_headers = {
        "topic": message.topic(),
        "partition": str(message.partition()),
        "offset": str(message.offset()),
        "timestamp": str(timestamp_ms),
        "category": rejection.category,
        "reason": rejection.reason[:MAX_REASON_CHARS],
        "consumer.group": consumer_group,
        "run.id": run_id,
        "failed.at": failed_at,
    }
    original = [(k, v) for k, v in (message.headers() or []) if not k.startswith(HEADER_PREFIX)]
    headers = original + [(HEADER_PREFIX + k, v.encode()) for k, v in error_headers.items()]
    return OutRecord(value=message.value() or b"", key=message.key(), headers=headers)


def error_headers(message: Message) -> Mapping[str, str]:
    """The ``__dlq.errors.*`` headers of a dead-lettered message, without the prefix."""
    return {
        k[len(HEADER_PREFIX) :]: (v or b"").decode("utf-8", "replace")
        for k, v in (message.headers() or [])
        if k.startswith(HEADER_PREFIX)
    }
