"""Dead-letter records: a payload, with why and where-from in headers.

Modelled on Kafka Connect's ``__connect.errors.*`` headers, so standard tooling can read
them and a replay knows exactly which source record a dead letter stands for. A record larger
than the DLQ topic accepts is stored by *claim check*: the original key, value and headers go to
the file store under a path derived from the source topic, partition and offset, and the dead
letter carries the reference, the size and the SHA-256 instead. Replays read them back.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Optional, Protocol

from confluent_kafka import Message

from pipeline_defs.lib.attachments.url_safety import safe_path_segment
from pipeline_defs.lib.ingest.guard import RejectedRecord
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.kafka.resource import KafkaResource

HEADER_PREFIX = "__dlq.errors."
CLAIM_CHECK_HEADER = "__dlq.claim_check"  # the claim's path in the file store
CLAIM_CHECK_ROOT = "_dlq_claims"
MAX_REASON_CHARS = 1_000
_RECORD_OVERHEAD = 512  # record and batch framing the size estimate leaves out


@dataclass(frozen=True)
class SourceRecord:
    """Where a dead letter came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int = -1

    @classmethod
    def of(cls, message: Message) -> SourceRecord:
        _, timestamp_ms = message.timestamp()
        return cls(message.topic() or "", message.partition() or 0, message.offset() or 0, timestamp_ms)


def original_headers(message: Message) -> list[tuple[str, bytes]]:
    """A message's headers, or none if the client cannot decode them (a hostile producer)."""
    try:
        return [(str(header[0]), _as_bytes(header[1])) for header in (message.headers() or [])]
    except (UnicodeDecodeError, ValueError, TypeError):
        return []


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
    failed_at = (now or datetime.now(UTC)).isoformat()
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
    headers = kept + [(HEADER_PREFIX + k, v.encode("utf-8", "replace")) for k, v in error_headers.items()]
    return OutRecord(value=value, key=key, headers=headers)


def dead_letter(
    message: Message,
    rejection: RejectedRecord,
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
        original_headers=original_headers(message),
        now=now,
    )


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value or "").encode()


def error_headers(message: Message) -> Mapping[str, str]:
    """The ``__dlq.errors.*`` headers of a dead-lettered message, without the prefix."""
    return {
        k[len(HEADER_PREFIX) :]: v.decode("utf-8", "replace") for k, v in original_headers(message) if k.startswith(HEADER_PREFIX)
    }


class ClaimStore(Protocol):
    """Where oversized dead letters keep their original bytes (the lakehouse Files area)."""

    def put_bytes(self, path: str, data: bytes) -> None: ...

    def get_bytes(self, path: str) -> bytes: ...


def record_size(record: OutRecord) -> int:
    headers = sum(len(k.encode("utf-8", "replace")) + len(v or b"") for k, v in record.headers)
    return len(record.value or b"") + len(record.key or b"") + headers + _RECORD_OVERHEAD


@dataclass(frozen=True)
class DeadLetterTopic:
    """A dead-letter topic that takes any record: what the topic cannot hold goes by claim check."""

    kafka: KafkaResource
    name: str
    claims: ClaimStore

    def send(self, records: Iterable[OutRecord]) -> int:
        limit = self.kafka.max_message_bytes(self.name)
        return self.kafka.produce(self.name, [self._fitted(r, limit) for r in records])

    def _fitted(self, record: OutRecord, limit: int) -> OutRecord:
        if record_size(record) <= limit:
            return record
        errors = {k[len(HEADER_PREFIX) :]: v.decode("utf-8", "replace") for k, v in record.headers if k.startswith(HEADER_PREFIX)}
        path = "/".join(
            [
                CLAIM_CHECK_ROOT,
                safe_path_segment(errors.get("topic")),
                safe_path_segment(errors.get("partition")),
                f"{safe_path_segment(errors.get('offset'))}.json",
            ]
        )
        original = {
            "key": _b64(record.key),
            "value": _b64(record.value),
            "headers": [[k, _b64(v)] for k, v in record.headers if not k.startswith(HEADER_PREFIX)],
        }
        self.claims.put_bytes(path, json.dumps(original).encode())
        reference = {
            "claim_check": {
                "path": path,
                "size": len(record.value or b""),
                "sha256": hashlib.sha256(record.value or b"").hexdigest(),
            }
        }
        small_key = record.key if record.key is not None and len(record.key) <= 1024 else None
        headers = [(k, v) for k, v in record.headers if k.startswith(HEADER_PREFIX)]
        return OutRecord(json.dumps(reference).encode(), small_key, [*headers, (CLAIM_CHECK_HEADER, path.encode())])


def claimed_original(claims: ClaimStore, path: str) -> OutRecord:
    """The original record a claim check stands for."""
    document = json.loads(claims.get_bytes(path))
    return OutRecord(
        value=_unb64(document["value"]) or b"",
        key=_unb64(document["key"]),
        headers=[(k, _unb64(v) or b"") for k, v in document["headers"]],
    )


def _b64(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: Optional[str]) -> Optional[bytes]:
    return None if text is None else base64.b64decode(text)
