"""What an attachment inventory records: the domain's columns (its spec), the stored file's, and
the lineage of the task; plus what a stored file is on its way to a row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional, Protocol

import pyarrow as pa

from pipeline_defs.lib.attachments.bodies import DownloadedFile
from pipeline_defs.lib.attachments.tasks import AttachmentTask
from pipeline_defs.lib.dlq.records import SourceRecord
from pipeline_defs.lib.ingest.failures import TaskFailure
from pipeline_defs.lib.ingest.sink import (
    LINEAGE_COLUMNS,
)

STORED_COLUMNS = pa.schema(
    [
        pa.field("blob_path", pa.string(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("file_type", pa.string(), nullable=False),
        pa.field("content_type", pa.string()),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("downloaded_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("uploaded_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("attempt_count", pa.int32(), nullable=False),
        pa.field("event_topic", pa.string()),
        pa.field("event_partition", pa.int32()),
        pa.field("event_offset", pa.int64()),
    ]
)


@dataclass(frozen=True)
class InventorySpec:
    """A domain's attachment inventory: its task type, key and domain columns."""

    table: str
    task_type: type[AttachmentTask]
    key_columns: tuple[str, ...]
    columns: pa.Schema  # domain columns, key columns first
    domain_row: Callable[[Any], dict[str, Any]]  # task -> domain columns

    @property
    def schema(self) -> pa.Schema:
        return pa.unify_schemas([self.columns, STORED_COLUMNS, LINEAGE_COLUMNS])


@dataclass(frozen=True)
class Stored:
    task: AttachmentTask
    carrier: Optional[SourceRecord]  # the Kafka record that carried the task, if any
    file: DownloadedFile
    blob_path: str
    uploaded_at: datetime


class UrlRefresher(Protocol):
    """Fresh download URLs for tasks whose presigned link expired (or that carry none yet)."""

    def is_stale(self, task: AttachmentTask, now: datetime) -> bool: ...

    async def refresh(self, tasks: Sequence[AttachmentTask]) -> dict[tuple[str, ...], AttachmentTask | TaskFailure]: ...


ATTACHMENT_COUNTERS = (
    "files_stored",
    "bytes_stored",
    "already_stored",
    "urls_refreshed",
    "failed_transient",
    "failed_permanent",
    "failed_auth",
    "circuit_open",
    "failed_unprocessable",
    "retries_scheduled",
    "downloads_dead_lettered",
    "download_seconds",
)
