"""ClaimX: the seeds' ``ClaimXEventMessage`` and its ``claimx_events`` row, the enrichment task
each new event becomes, and the download task and inventory row of each media file."""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Optional

import pyarrow as pa
from confluent_kafka import Message
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from pipeline_defs.lib.attachments.tables import InventorySpec
from pipeline_defs.lib.attachments.tasks import AttachmentTask
from pipeline_defs.lib.attachments.url_safety import MAX_URL_LENGTH, safe_path_segment
from pipeline_defs.lib.ingest.event_log import EventLogSpec
from pipeline_defs.lib.ingest.sink import PARTITION_COLUMN
from pipeline_defs.lib.ingest.tasks import RetryableTask, SourceEvent
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.validation.fields import Identifier, JsonObject, NonEmptyStr, UtcDatetime, parsed


class ClaimXEventType(str, Enum):
    PROJECT_CREATED = "PROJECT_CREATED"
    PROJECT_FILE_ADDED = "PROJECT_FILE_ADDED"
    PROJECT_MFN_ADDED = "PROJECT_MFN_ADDED"
    CUSTOM_TASK_ASSIGNED = "CUSTOM_TASK_ASSIGNED"
    CUSTOM_TASK_COMPLETED = "CUSTOM_TASK_COMPLETED"
    POLICYHOLDER_INVITED = "POLICYHOLDER_INVITED"
    POLICYHOLDER_JOINED = "POLICYHOLDER_JOINED"
    VIDEO_COLLABORATION_INVITE_SENT = "VIDEO_COLLABORATION_INVITE_SENT"
    VIDEO_COLLABORATION_COMPLETED = "VIDEO_COLLABORATION_COMPLETED"


# The id an event type cannot do without, besides project_id.
REQUIRED_BY_TYPE = {
    ClaimXEventType.PROJECT_FILE_ADDED: "media_id",
    ClaimXEventType.PROJECT_MFN_ADDED: "master_file_name",
    ClaimXEventType.CUSTOM_TASK_ASSIGNED: "task_assignment_id",
    ClaimXEventType.CUSTOM_TASK_COMPLETED: "task_assignment_id",
    ClaimXEventType.VIDEO_COLLABORATION_INVITE_SENT: "video_collaboration_id",
    ClaimXEventType.VIDEO_COLLABORATION_COMPLETED: "video_collaboration_id",
}


class ClaimXEventFields(BaseModel):
    """What every ClaimX event says, on the wire and in the enrichment task."""

    model_config = ConfigDict(extra="ignore")

    event_id: Identifier
    event_type: ClaimXEventType
    project_id: Identifier
    media_id: Optional[Identifier] = None
    task_assignment_id: Optional[Identifier] = None
    video_collaboration_id: Optional[Identifier] = None
    master_file_name: Optional[NonEmptyStr] = None

    @model_validator(mode="after")
    def _has_what_its_type_needs(self) -> ClaimXEventFields:
        needed = REQUIRED_BY_TYPE.get(self.event_type)
        if needed and getattr(self, needed) is None:
            raise ValueError(f"{needed} is required for {self.event_type.value}")
        return self


class ClaimXEvent(ClaimXEventFields):
    """A raw ClaimX event as it arrives on ``claimx.events.raw`` (the Eventhouse's export)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ingested_at: UtcDatetime
    raw_data: JsonObject = Field(default_factory=dict)


CLAIMX_EVENT_COLUMNS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("project_id", pa.string(), nullable=False),
        pa.field("media_id", pa.string()),
        pa.field("task_assignment_id", pa.string()),
        pa.field("video_collaboration_id", pa.string()),
        pa.field("master_file_name", pa.string()),
        pa.field("event_ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("raw_data", pa.string()),
        pa.field("raw_payload", pa.string(), nullable=False),
    ]
)

EVENT_ID_COLUMNS = [
    "event_id",
    "event_type",
    "project_id",
    "media_id",
    "task_assignment_id",
    "video_collaboration_id",
    "master_file_name",
]


def claimx_event_row(message: Message) -> dict[str, Any]:
    """Validate one ``claimx.events.raw`` message; raise ``RejectedRecord`` if it cannot be used."""
    raw = message.value() or b""
    event = parsed(ClaimXEvent, raw)
    return {
        **event.model_dump(include=set(EVENT_ID_COLUMNS), mode="json"),
        "event_ingested_at": event.ingested_at,
        "raw_data": json.dumps(event.raw_data, separators=(",", ":"), allow_nan=False),
        "raw_payload": raw.decode("utf-8"),
    }


CLAIMX_EVENTS = EventLogSpec(
    table="claimx_events",
    columns=CLAIMX_EVENT_COLUMNS,
    to_row=claimx_event_row,
    key_columns=("event_id",),
)


class ClaimXEnrichmentTask(ClaimXEventFields, RetryableTask):
    """One event to enrich through the ClaimX API (the seeds' ClaimXEnrichmentTask)."""

    event_ingested_at: UtcDatetime

    @property
    def key(self) -> tuple[str, ...]:
        return (self.event_id,)

    @property
    def message_key(self) -> bytes:
        return self.project_id.encode()  # a project's events stay in order


# The claimx_events columns its enrichment and media download tasks are derived from (backfills).
CLAIMX_TASK_SOURCE_COLUMNS = [
    *EVENT_ID_COLUMNS,
    "event_ingested_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    PARTITION_COLUMN,
]


def claimx_enrichment_tasks(event: dict[str, Any]) -> list[ClaimXEnrichmentTask]:
    """The enrichment task of a ``claimx_events`` row (lineage columns included)."""
    return [
        ClaimXEnrichmentTask(
            **{c: event[c] for c in EVENT_ID_COLUMNS},
            event_ingested_at=event["event_ingested_at"],
            source=SourceEvent.of_row(event),
        )
    ]


def claimx_enrichment_task_records(event: dict[str, Any]) -> list[OutRecord]:
    return [OutRecord(value=t.encode(), key=t.message_key) for t in claimx_enrichment_tasks(event)]


class ClaimXDownloadTask(AttachmentTask):
    """One media file of a project (the seeds' ClaimXDownloadTask). ``download_url`` is presigned
    and expires at ``expires_at``; an empty one (a backfill) is fetched fresh before the download."""

    media_id: Identifier
    project_id: Identifier
    download_url: Annotated[str, StringConstraints(max_length=MAX_URL_LENGTH)] = ""
    file_name: Optional[NonEmptyStr] = None  # from the media listing; a backfill learns it on refresh
    file_type: Optional[str] = None
    expires_at: Optional[UtcDatetime] = None
    source_event_id: Optional[Identifier] = None

    @property
    def url(self) -> str:
        return self.download_url

    @property
    def key(self) -> tuple[str, ...]:
        return (self.media_id,)

    @property
    def message_key(self) -> bytes:
        return self.project_id.encode()

    def blob_path(self, file_name: str) -> str:
        return claimx_blob_path(self.project_id, self.media_id, self.file_name or file_name)

    def is_stale(self, now: datetime) -> bool:
        return not self.download_url or (self.expires_at is not None and self.expires_at <= now)

    def without_credentials(self) -> ClaimXDownloadTask:
        return self.model_copy(update={"download_url": "", "expires_at": None})


CLAIMX_ATTACHMENTS = InventorySpec(
    table="claimx_attachments",
    task_type=ClaimXDownloadTask,
    key_columns=("media_id",),
    columns=pa.schema(
        [
            pa.field("media_id", pa.string(), nullable=False),
            pa.field("project_id", pa.string(), nullable=False),
            pa.field("media_file_name", pa.string()),
            pa.field("source_event_id", pa.string()),
        ]
    ),
    domain_row=lambda task: {
        "media_id": task.media_id,
        "project_id": task.project_id,
        "media_file_name": task.file_name,
        "source_event_id": task.source_event_id,
    },
)


def media_download_tasks(event: dict[str, Any]) -> list[ClaimXDownloadTask]:
    """For a backfill: the media download of a ``PROJECT_FILE_ADDED`` row of ``claimx_events``,
    without a link (the refresher fetches a fresh one)."""
    if event["event_type"] != ClaimXEventType.PROJECT_FILE_ADDED.value:
        return []
    return [
        ClaimXDownloadTask(
            media_id=event["media_id"],
            project_id=event["project_id"],
            source_event_id=event["event_id"],
            source=SourceEvent.of_row(event),
        )
    ]


CLAIMX_FILES_ROOT = "claimx"


def claimx_blob_path(project_id: str, media_id: str, file_name: str) -> str:
    """``claimx/<project id>/media/<media id>_<file>``: one folder per project, and the media id
    in the name so two files with one name never overwrite each other."""
    name = safe_path_segment(file_name, fallback="media")
    return "/".join([CLAIMX_FILES_ROOT, safe_path_segment(project_id), "media", f"{safe_path_segment(media_id)}_{name}"])
