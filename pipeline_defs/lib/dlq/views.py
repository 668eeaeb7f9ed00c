"""DLQ views: a Delta table per dead-letter topic with one row per failed item.

A view row is the item's latest state: merged on ``entry_id`` (a stable id of the failed item,
so a replayed item that fails again updates its row instead of adding one), updated only by a
newer dead letter. Purge leaves a tombstone without payload, so re-reading the topic cannot
bring a purged entry back. A dead letter the view cannot read is still a row: an entry of its
own coordinates, with the reason it could not be read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Optional

import polars as pl
import pyarrow as pa
from confluent_kafka import Message
from deltalake import CommitProperties, DeltaTable, write_deltalake

from pipeline_defs.lib.delta.resource import as_frame
from pipeline_defs.lib.dlq.records import (
    HEADER_PREFIX,
    ClaimStore,
    error_headers,
    original_headers,
)
from pipeline_defs.lib.ingest.guard import RejectedRecord
from pipeline_defs.lib.ingest.sink import LINEAGE_COLUMNS, PARTITION_COLUMN, BatchContext, RecordSink, lineage
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.validation.timestamps import from_epoch_ms

REPLAY_OF_HEADER = "__dlq.replay.of"  # carried by replayed records, so a re-failure keeps its entry

WAITING, REPLAYING, REPLAYED, RESOLVED, PURGED = "waiting", "replaying", "replayed", "resolved", "purged"
STATUSES = (WAITING, REPLAYING, REPLAYED, RESOLVED, PURGED)

VIEW_COLUMNS = pa.schema(
    [
        pa.field("entry_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string()),
        pa.field("error_category", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("retry_count", pa.int32()),
        pa.field("first_seen", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("last_seen", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("source_topic", pa.string()),
        pa.field("source_partition", pa.int32()),
        pa.field("source_offset", pa.int64()),
        pa.field("payload", pa.binary()),
        pa.field("payload_key", pa.binary()),
        pa.field("payload_headers", pa.string()),  # JSON [[name, hex]] of the original headers
        pa.field("status", pa.string(), nullable=False),
        pa.field("status_reason", pa.string()),
        pa.field("status_changed_at", pa.timestamp("us", tz="UTC")),
        pa.field("status_run_id", pa.string()),
    ]
)
VIEW_SCHEMA = pa.unify_schemas([VIEW_COLUMNS, LINEAGE_COLUMNS])


@dataclass(frozen=True)
class DeadLetter:
    """What a domain makes of one dead-letter message."""

    entry_id: str
    item_id: Optional[str]
    retry_count: int = 0


# (row, resources, claim store) -> (topic, record) that puts the item back on its pending path
ReplayRecord = Callable[[dict[str, Any], Any, ClaimStore], tuple[str, OutRecord]]


@dataclass(frozen=True)
class DlqViewSpec:
    """One dead-letter topic (named by the resources in ``resource_keys``), how its entries are
    identified, and where a replay sends them."""

    name: str  # e.g. xact_downloads
    topic_of: Callable[[Any], str]  # resources -> the DLQ topic
    describe: Callable[[Message], DeadLetter]
    replay_record: ReplayRecord
    resource_keys: frozenset[str] = frozenset()
    replay_cluster: str = "kafka"  # resource key of the cluster the replay topic lives on

    @property
    def table(self) -> str:
        return f"dlq_{self.name}"

    @property
    def schema(self) -> pa.Schema:
        return VIEW_SCHEMA


def bounded_id(entry_id: str, limit: int = 512) -> str:
    """An entry id fit for a table key and an operator's filter: a long one (a task keyed by an
    8 KiB URL) keeps its start and gets a digest of the whole."""
    if len(entry_id) <= limit:
        return entry_id
    return f"{entry_id[: limit - 18]}#{hashlib.sha256(entry_id.encode('utf-8', 'replace')).hexdigest()[:16]}"


def entry_for_source(message: Message) -> DeadLetter:
    """For DLQs that hold original records: the item is its source record (or, after a replay,
    the record it replays), named by its id field when the bytes parse as JSON."""
    headers = dict(original_headers(message))
    errors = error_headers(message)
    replay_of = headers.get(REPLAY_OF_HEADER, b"").decode("utf-8", "replace")
    entry_id = replay_of or f"{errors.get('topic')}:{errors.get('partition')}:{errors.get('offset')}"
    return DeadLetter(entry_id=entry_id, item_id=_json_field(message.value(), ("trace_id", "event_id")))


def _json_field(value: Optional[bytes], names: Sequence[str]) -> Optional[str]:
    try:
        document = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    return next((str(document[n])[:512] for n in names if document.get(n) is not None), None)


def encode_headers(headers: Sequence[tuple[str, Optional[bytes]]]) -> str:
    return json.dumps([[k, (v or b"").hex()] for k, v in headers if not k.startswith(HEADER_PREFIX)])


def decode_headers(encoded: Optional[str]) -> list[tuple[str, bytes]]:
    return [(k, bytes.fromhex(v)) for k, v in json.loads(encoded or "[]")]


@dataclass
class DlqViewSink(RecordSink[dict[str, Any]]):
    """Dead-letter messages -> the view, merged on entry_id (newest dead letter wins)."""

    spec: DlqViewSpec
    counters: tuple[str, ...] = ("entries_updated", "unreadable_dead_letters")
    _unreadable: list[dict[str, Any]] = field(default_factory=list)

    stage = "read the dead letter"

    def prepare(self, message: Message, context: BatchContext) -> dict[str, Any]:
        entry = self.spec.describe(message)
        errors = error_headers(message)
        row = self._row(message, context, entry.entry_id, errors.get("category"), errors.get("reason"))
        row |= {
            "item_id": entry.item_id,
            "retry_count": entry.retry_count,
            "source_topic": errors.get("topic"),
            "source_partition": int(errors.get("partition", -1)),
            "source_offset": int(errors.get("offset", -1)),
        }
        pa.Table.from_pylist([row], schema=VIEW_SCHEMA)  # a row that does not fit is unreadable
        return row

    def reject(self, rejected: Sequence[tuple[Message, RejectedRecord]], context: BatchContext) -> None:
        """A dead letter the view cannot read becomes an entry of its own DLQ coordinates."""
        for message, rejection in rejected:
            context.report.counts["unreadable_dead_letters"] += 1
            entry_id = f"{message.topic()}:{message.partition()}:{message.offset()}"
            self._unreadable.append(self._row(message, context, entry_id, rejection.category, rejection.reason))

    def finish(self, items: Sequence[tuple[Message, dict[str, Any]]], context: BatchContext) -> pa.Table:
        rows, self._unreadable = [row for _, row in items] + self._unreadable, []
        return pa.Table.from_pylist(rows, schema=VIEW_SCHEMA)

    @staticmethod
    def _row(
        message: Message, context: BatchContext, entry_id: str, category: Optional[str], reason: Optional[str]
    ) -> dict[str, Any]:
        seen = from_epoch_ms(message.timestamp()[1]) or datetime.now(UTC)
        return {
            "entry_id": bounded_id(entry_id),
            "error_category": category,
            "reason": reason,
            "first_seen": seen,
            "last_seen": seen,
            "payload": message.value(),
            "payload_key": message.key(),
            "payload_headers": encode_headers(original_headers(message)),
            "status": WAITING,
            "status_reason": None,
            "status_changed_at": seen,
            "status_run_id": context.run_id,
            **lineage(message, context.ingestion_date, context.run_id, datetime.now(UTC)),
        }

    def write(self, rows: pa.Table, table: DeltaTable, commit: CommitProperties, context: BatchContext) -> int:
        if rows.num_rows == 0:
            write_deltalake(table, rows, mode="append", partition_by=[PARTITION_COLUMN], commit_properties=commit)
            return 0
        latest = (
            as_frame(rows)
            .sort("last_seen")
            .group_by("entry_id", maintain_order=True)
            .agg(pl.all().last(), pl.col("first_seen").min().alias("_first"))
            .with_columns(pl.col("_first").alias("first_seen"))
            .drop("_first")
            .select(VIEW_SCHEMA.names)
        )
        refreshed = [c for c in VIEW_SCHEMA.names if c not in ("entry_id", "first_seen", PARTITION_COLUMN)]
        metrics = (
            table.merge(
                latest.to_arrow().cast(VIEW_SCHEMA),
                predicate="t.entry_id = s.entry_id",
                source_alias="s",
                target_alias="t",
                commit_properties=commit,
            )
            .when_matched_update(updates={c: f"s.{c}" for c in refreshed}, predicate="s.last_seen > t.last_seen")
            .when_not_matched_insert_all()
            .execute()
        )
        updated = int(metrics.get("num_target_rows_updated", 0))
        context.report.counts["entries_updated"] += updated
        return int(metrics.get("num_target_rows_inserted", 0)) + updated
