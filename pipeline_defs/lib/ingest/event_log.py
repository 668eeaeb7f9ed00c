"""Event-log tables: validated events appended once per key, bad messages dead-lettered."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, Optional

import polars as pl
import pyarrow as pa
from confluent_kafka import Message
from deltalake import CommitProperties, DeltaTable, write_deltalake

from pipeline_defs.lib.delta.resource import as_frame, scan_snapshot
from pipeline_defs.lib.dlq.records import DeadLetterTopic
from pipeline_defs.lib.ingest.columnar import ColumnarDecoder
from pipeline_defs.lib.ingest.guard import RejectedRecord, guarded
from pipeline_defs.lib.ingest.sink import (
    LINEAGE_COLUMNS,
    PARTITION_COLUMN,
    BatchContext,
    IngestMode,
    RecordSink,
    dedup_window,
    table_from_rows,
)
from pipeline_defs.lib.kafka.records import OutRecord, Topic, position

_LATEST_MS = 253_402_300_799_999  # the last millisecond of year 9999
_POSITION = ["kafka_topic", "kafka_partition", "kafka_offset"]


@dataclass(frozen=True)
class EventLogSpec:
    """How one event topic lands in one Delta table."""

    table: str
    columns: pa.Schema
    to_row: Callable[[Message], dict[str, Any]]  # raises RejectedRecord
    key_columns: tuple[str, ...]
    columnar: Optional[ColumnarDecoder] = None  # the fast path for ordinary records, if any

    @property
    def schema(self) -> pa.Schema:
        return pa.unify_schemas([self.columns, LINEAGE_COLUMNS])


class Prepared(NamedTuple):
    row: dict[str, Any]
    follow_ups: list[OutRecord]


# What a follow-up builder sees besides the row: where the event came from and its partition.
SOURCE_FIELDS = ("kafka_topic", "kafka_partition", "kafka_offset", PARTITION_COLUMN)


@dataclass
class EventLogSink(RecordSink[Prepared]):
    """Appends each key once within ±``dedup_window_days`` of ingestion dates. Rejected
    messages go to ``dead_letters`` (streaming only: a backfill re-reads what was already
    dead-lettered). ``follow_ups`` turns each row into records for ``follow_up`` (download or
    enrichment tasks); they are built with the row, so an event whose tasks cannot be built is
    dead-lettered rather than written, and produced before the commit, so no row is ever
    committed without its follow-ups."""

    spec: EventLogSpec
    dead_letters: DeadLetterTopic
    dedup_window_days: int = 1
    follow_up: Optional[Topic] = None
    follow_ups: Optional[Callable[[dict[str, Any]], Iterable[OutRecord]]] = None
    _pending: dict[tuple[int, int], list[OutRecord]] = field(default_factory=dict)

    counters = ("duplicates_skipped", "follow_ups_sent", "columnar_decoded")
    stage = "decode and validate"

    def dead_letter_topic(self) -> DeadLetterTopic:
        return self.dead_letters

    def rows_for(self, messages: Sequence[Message], context: BatchContext) -> pa.Table:
        """The columnar fast path for the records it vouches for, the per-record path for the
        rest (their rows first; ``write`` orders by offset where it matters)."""
        decoder = self.spec.columnar
        if decoder is None or not messages:
            return super().rows_for(messages, context)
        decoded = decoder.decode([m.value() or b"" for m in messages])
        slow_rows = super().rows_for([messages[i] for i in decoded.slow], context)
        slow_follow_ups = self._pending
        fast_rows = self._fast_rows(decoded.rows, [messages[i] for i in decoded.fast], decoder, context)
        self._pending.update(slow_follow_ups)
        context.report.counts["columnar_decoded"] += fast_rows.num_rows
        return pa.concat_tables([slow_rows, fast_rows.cast(slow_rows.schema)])

    def _fast_rows(self, columns: pa.Table, messages: list[Message], decoder: ColumnarDecoder, context: BatchContext) -> pa.Table:
        """Lineage for the decoded rows, and their follow-ups, built per row only where
        ``decoder`` says there may be some; a row whose follow-ups cannot be built is rejected."""
        self._pending = {}
        rejected: list[tuple[Message, RejectedRecord]] = []
        if self.follow_ups is not None and columns.num_rows:
            frame = as_frame(columns).with_row_index("_index")
            for row in frame.filter(decoder.follow_ups_needed).iter_rows(named=True):
                message = messages[row.pop("_index")]
                source = dict(zip(SOURCE_FIELDS, (*position(message), context.ingestion_date)))
                built = guarded("build follow-up tasks", _follow_ups_of, self.follow_ups, {**row, **source})
                if isinstance(built, RejectedRecord):
                    rejected.append((message, built))
                else:
                    self._pending[position(message)[1:]] = built
        if rejected:
            self.reject(rejected, context)
            bad = {id(m) for m, _ in rejected}
            keep = [i for i, m in enumerate(messages) if id(m) not in bad]
            columns, messages = columns.take(keep), [messages[i] for i in keep]
        return with_lineage(columns, messages, context.ingestion_date, context.run_id, datetime.now(UTC))

    def prepare(self, message: Message, context: BatchContext) -> Prepared:
        row = self.spec.to_row(message)
        if self.follow_ups is None:
            return Prepared(row, [])
        source = dict(zip(SOURCE_FIELDS, (*position(message), context.ingestion_date)))
        built = guarded("build follow-up tasks", _follow_ups_of, self.follow_ups, {**row, **source})
        if isinstance(built, RejectedRecord):
            raise built
        return Prepared(row, built)

    def finish(self, items: Sequence[tuple[Message, Prepared]], context: BatchContext) -> pa.Table:
        columns, rejected = table_from_rows(
            [item.row for _, item in items], [m for m, _ in items], self.spec.columns, "build the row"
        )
        self.reject(rejected, context)
        bad = {id(m) for m, _ in rejected}
        accepted = [(m, item) for m, item in items if id(m) not in bad]
        self._pending = {position(m)[1:]: item.follow_ups for m, item in accepted}
        return with_lineage(columns, [m for m, _ in accepted], context.ingestion_date, context.run_id, datetime.now(UTC))

    def write(self, rows: pa.Table, table: DeltaTable, commit: CommitProperties, context: BatchContext) -> int:
        fresh = self._unseen(rows, table, context)
        context.report.counts["duplicates_skipped"] += rows.num_rows - fresh.height
        if self.follow_up is not None and fresh.height:
            records = [  # popped: an attempt retried after a commit conflict does not send them again
                record
                for key in fresh.select("kafka_partition", "kafka_offset").iter_rows()
                for record in self._pending.pop(key, [])
            ]
            context.report.counts["follow_ups_sent"] += self.follow_up.send(records)
        write_deltalake(
            table,
            fresh.to_arrow().cast(self.schema),
            mode="append",
            partition_by=[PARTITION_COLUMN],
            schema_mode="merge",
            commit_properties=commit,
        )
        return fresh.height

    def _unseen(self, rows: pa.Table, table: DeltaTable, context: BatchContext) -> pl.DataFrame:
        """The first row of each key in the batch, minus keys already in the window. A backfill
        looks at every later day too: the stream files events by the day it read them, which
        can be days after the day a backfill re-reads them by."""
        keys = list(self.spec.key_columns)
        frame = as_frame(rows)
        if not frame.select(pl.struct(keys).is_unique().all()).item():  # a key twice in the batch: its first offset wins
            frame = frame.sort(_POSITION).unique(subset=keys, keep="first", maintain_order=True)
        if frame.height == 0:
            return frame
        known = (
            scan_snapshot(table)
            .filter(self._window(context.ingestion_date, context.mode))
            .select(keys)
            .join(frame.lazy().select(keys), on=keys, how="semi")
            .collect()
        )
        if known.height:
            frame = frame.join(known, on=keys, how="anti", maintain_order="left")
        return frame

    def _window(self, day: date, mode: IngestMode) -> pl.Expr:
        if mode is IngestMode.BACKFILL:
            return pl.col(PARTITION_COLUMN) >= day - timedelta(days=self.dedup_window_days)
        return pl.col(PARTITION_COLUMN).is_in(dedup_window(day, self.dedup_window_days))


def with_lineage(columns: pa.Table, messages: Sequence[Message], ingestion_date: date, run_id: str, now: datetime) -> pa.Table:
    """``columns`` (one row per message) plus the lineage columns, built column-wise."""
    count = len(messages)
    stamps = [m.timestamp()[1] for m in messages]
    lineage_arrays = {
        "kafka_topic": pa.array([m.topic() for m in messages], pa.string()),
        "kafka_partition": pa.array([m.partition() for m in messages], pa.int32()),
        "kafka_offset": pa.array([m.offset() for m in messages], pa.int64()),
        "kafka_timestamp": pa.array(
            [ms * 1000 if ms and 0 < ms <= _LATEST_MS else None for ms in stamps], pa.timestamp("us", tz="UTC")
        ),
        "ingested_at": pa.array([now] * count, pa.timestamp("us", tz="UTC")),
        PARTITION_COLUMN: pa.array([ingestion_date] * count, pa.date32()),
        "dagster_run_id": pa.array([run_id] * count, pa.string()),
    }
    for name, array in lineage_arrays.items():
        columns = columns.append_column(LINEAGE_COLUMNS.field(name), array)
    return columns


def _follow_ups_of(follow_ups: Callable[[dict[str, Any]], Iterable[OutRecord]], row: dict[str, Any]) -> list[OutRecord]:
    return list(follow_ups(row))
