"""XACT events: the seeds' ``EventMessage`` and its row in ``xact_events``."""

from __future__ import annotations

from typing import Any, Optional

import pyarrow as pa
from confluent_kafka import Message
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline_defs.lib.kafka_to_delta import KafkaDeltaSink
from pipeline_defs.lib.schemas.common import NonEmptyStr, UtcDatetime, rejection_from


class XactEvent(BaseModel):
    """A raw XACT event as it arrives on ``events.raw``.

    ``event_subtype`` is the status subtype (documentsReceived, firstNoticeOfLossReceived,
    estimatePackageReceived, ...); assignment id and estimate version ride in ``payload``.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    trace_id: NonEmptyStr
    event_type: NonEmptyStr
    event_subtype: NonEmptyStr
    timestamp: UtcDatetime
    source_system: NonEmptyStr = "xn"
    payload: dict[str, Any] = Field(default_factory=dict)
    attachments: Optional[list[NonEmptyStr]] = None

    @property
    def assignment_id(self) -> Optional[str]:
        value = self.payload.get("assignmentId")
        return None if value is None else str(value)

    @property
    def estimate_version(self) -> Optional[str]:
        value = self.payload.get("estimateVersion")
        return None if value is None else str(value)


XACT_EVENT_COLUMNS = pa.schema(
    [
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("status_subtype", pa.string(), nullable=False),
        pa.field("assignment_id", pa.string()),
        pa.field("estimate_version", pa.string()),
        pa.field("source_system", pa.string()),
        pa.field("event_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("attachment_urls", pa.list_(pa.string())),
        pa.field("raw_payload", pa.string(), nullable=False),
    ]
)


def xact_event_row(message: Message) -> dict[str, Any]:
    """Validate one ``events.raw`` message; raise ``RejectedRecord`` if it cannot be used."""
    raw = message.value() or b""
    try:
        event = XactEvent.model_validate_json(raw)
    except ValidationError as exc:
        raise rejection_from(exc) from None
    return {
        "trace_id": event.trace_id,
        "event_type": event.event_type,
        "status_subtype": event.event_subtype,
        "assignment_id": event.assignment_id,
        "estimate_version": event.estimate_version,
        "source_system": event.source_system,
        "event_timestamp": event.timestamp,
        "attachment_urls": list(event.attachments or []),
        "raw_payload": raw.decode("utf-8"),
    }


XACT_EVENTS_SINK = KafkaDeltaSink(
    table="xact_events",
    columns=XACT_EVENT_COLUMNS,
    to_row=xact_event_row,
    key_columns=("trace_id",),
)
