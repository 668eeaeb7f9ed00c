"""XACT: the seeds' ``EventMessage`` and its ``xact_events`` row, and the download task and
inventory row of each attachment."""

from __future__ import annotations

from typing import Any, Optional

import polars as pl
import pyarrow as pa
from confluent_kafka import Message
from pydantic import BaseModel, ConfigDict, Field

from pipeline_defs.defs.xact.blob_paths import xact_blob_path
from pipeline_defs.lib.attachments.tables import InventorySpec
from pipeline_defs.lib.attachments.tasks import AttachmentTask
from pipeline_defs.lib.attachments.url_safety import MAX_URL_LENGTH
from pipeline_defs.lib.ingest.columnar import RAW_COLUMN, ColumnarDecoder
from pipeline_defs.lib.ingest.event_log import EventLogSpec
from pipeline_defs.lib.ingest.sink import PARTITION_COLUMN
from pipeline_defs.lib.ingest.tasks import SourceEvent
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.validation.columns import plain_text, text_list, utc_instant
from pipeline_defs.lib.validation.fields import JsonObject, NonEmptyStr, UrlStr, UtcDatetime, parsed


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
    payload: JsonObject = Field(default_factory=dict)
    attachments: Optional[list[UrlStr]] = None

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
    event = parsed(XactEvent, raw)
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


# The fast path for ordinary events (``lib/ingest/columnar.py``): the same rows as
# ``xact_event_row``; any event it cannot vouch for goes through ``xact_event_row``.
_XACT_WIRE = pa.schema(
    [
        ("trace_id", pa.string()),
        ("event_type", pa.string()),
        ("event_subtype", pa.string()),
        ("timestamp", pa.string()),
        ("source_system", pa.string()),  # missing means "xn": left to the per-record path
        ("payload", pa.struct([("assignmentId", pa.string()), ("estimateVersion", pa.string())])),
        ("attachments", pa.list_(pa.string())),
    ]
)


def _xact_accepted(wire: pl.DataFrame, built: pl.DataFrame) -> pl.Series:
    return (
        wire.select(
            plain_text("trace_id")
            & plain_text("event_type")
            & plain_text("event_subtype")
            & plain_text("source_system")
            & pl.col("payload").is_not_null()
            & text_list("attachments", 8 * MAX_URL_LENGTH)
        ).to_series()
        & built["event_timestamp"].is_not_null()
    )


def _xact_columns(wire: pl.DataFrame) -> pl.DataFrame:
    return wire.select(
        "trace_id",
        "event_type",
        pl.col("event_subtype").alias("status_subtype"),
        pl.col("payload").struct.field("assignmentId").alias("assignment_id"),
        pl.col("payload").struct.field("estimateVersion").alias("estimate_version"),
        "source_system",
        utc_instant("timestamp").alias("event_timestamp"),
        pl.col("attachments").fill_null(pl.lit([], dtype=pl.List(pl.String))).alias("attachment_urls"),
        pl.col(RAW_COLUMN).alias("raw_payload"),
    )


XACT_EVENTS = EventLogSpec(
    table="xact_events",
    columns=XACT_EVENT_COLUMNS,
    to_row=xact_event_row,
    key_columns=("trace_id",),
    columnar=ColumnarDecoder(
        wire=_XACT_WIRE,
        build=_xact_columns,
        accepted=_xact_accepted,
        columns=XACT_EVENT_COLUMNS,
        follow_ups_needed=pl.col("attachment_urls").list.len() > 0,
    ),
)


class XactDownloadTask(AttachmentTask):
    """One attachment URL of one XACT event (the seeds' DownloadTaskMessage)."""

    trace_id: NonEmptyStr
    attachment_url: UrlStr
    status_subtype: NonEmptyStr
    assignment_id: Optional[str] = None
    estimate_version: Optional[str] = None
    event_timestamp: UtcDatetime

    @property
    def url(self) -> str:
        return self.attachment_url

    @property
    def key(self) -> tuple[str, ...]:
        return (self.trace_id, self.attachment_url)

    @property
    def message_key(self) -> bytes:
        return self.trace_id.encode()

    def blob_path(self, file_name: str) -> str:
        return xact_blob_path(
            self.status_subtype, self.trace_id, self.assignment_id, self.estimate_version, file_name, self.attachment_url
        )


XACT_TASK_COLUMNS = [
    "trace_id",
    "attachment_urls",
    "status_subtype",
    "assignment_id",
    "estimate_version",
    "event_timestamp",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    PARTITION_COLUMN,
]


def xact_download_tasks(event: dict[str, Any]) -> list[XactDownloadTask]:
    """One task per attachment URL of an ``xact_events`` row (lineage columns included)."""
    return [
        XactDownloadTask(
            trace_id=event["trace_id"],
            attachment_url=url,
            status_subtype=event["status_subtype"],
            assignment_id=event["assignment_id"],
            estimate_version=event["estimate_version"],
            event_timestamp=event["event_timestamp"],
            source=SourceEvent.of_row(event),
        )
        for url in event["attachment_urls"] or []
    ]


def xact_download_task_records(event: dict[str, Any]) -> list[OutRecord]:
    return [OutRecord(value=t.encode(), key=t.message_key) for t in xact_download_tasks(event)]


XACT_ATTACHMENTS = InventorySpec(
    table="xact_attachments",
    task_type=XactDownloadTask,
    key_columns=("trace_id", "attachment_url"),
    columns=pa.schema(
        [
            pa.field("trace_id", pa.string(), nullable=False),
            pa.field("attachment_url", pa.string(), nullable=False),
            pa.field("status_subtype", pa.string(), nullable=False),
            pa.field("assignment_id", pa.string()),
            pa.field("estimate_version", pa.string()),
            pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
        ]
    ),
    domain_row=lambda task: {
        "trace_id": task.trace_id,
        "attachment_url": task.attachment_url,
        "status_subtype": task.status_subtype,
        "assignment_id": task.assignment_id,
        "estimate_version": task.estimate_version,
        "event_timestamp": task.event_timestamp,
    },
)
