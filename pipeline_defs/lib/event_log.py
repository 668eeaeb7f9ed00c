"""Event-log tables: validated events appended once per key, bad messages dead-lettered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Optional, Sequence

import polars as pl
import pyarrow as pa
from confluent_kafka import Message
from deltalake import CommitProperties, DeltaTable, write_deltalake

from pipeline_defs.lib.delta import scan_snapshot
from pipeline_defs.lib.dlq import RejectedRecord, dead_letter
from pipeline_defs.lib.kafka import OutRecord, Topic
from pipeline_defs.lib.kafka_to_delta import (
    LINEAGE_COLUMNS,
    PARTITION_COLUMN,
    BatchContext,
    IngestMode,
    dedup_window,
    with_lineage,
)


@dataclass(frozen=True)
class EventLogSpec:
    """How one event topic lands in one Delta table."""

    table: str
    columns: pa.Schema
    to_row: Callable[[Message], dict[str, Any]]  # raises RejectedRecord
    key_columns: tuple[str, ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.unify_schemas([self.columns, LINEAGE_COLUMNS])


@dataclass
class EventLogSink:
    """Appends each key once within ±``dedup_window_days`` of ingestion dates. Rejected
    messages go to ``dead_letters`` (streaming only: a backfill re-reads what was already
    dead-lettered). ``follow_ups`` turns freshly written rows into records for ``follow_up``,
    produced before the commit so no row is ever committed without its follow-ups."""

    spec: EventLogSpec
    dead_letters: Topic
    dedup_window_days: int = 1
    follow_up: Optional[Topic] = None
    follow_ups: Optional[Callable[[pl.DataFrame], Iterable[OutRecord]]] = None

    counters = ("duplicates_skipped", "follow_ups_sent")

    @property
    def table(self) -> str:
        return self.spec.table

    @property
    def schema(self) -> pa.Schema:
        return self.spec.schema

    def rows_for(self, messages: Sequence[Message], context: BatchContext) -> pa.Table:
        rows, accepted, rejected = [], [], []
        for message in messages:
            try:
                rows.append(self.spec.to_row(message))
                accepted.append(message)
            except RejectedRecord as rejection:
                context.report.rejected[rejection.category] += 1
                rejected.append((message, rejection))
        if rejected and context.mode is IngestMode.STREAM:
            self.dead_letters.send(
                dead_letter(m, r, consumer_group=context.group_id, run_id=context.run_id)
                for m, r in rejected
            )
        columns = pa.Table.from_pylist(rows, schema=self.spec.columns)
        return with_lineage(columns, accepted, context.ingestion_date, context.run_id, datetime.now(timezone.utc))

    def write(
        self, rows: pa.Table, table: DeltaTable, commit: CommitProperties, context: BatchContext
    ) -> int:
        fresh = self._unseen(rows, table, context)
        context.report.counts["duplicates_skipped"] += rows.num_rows - fresh.height
        if self.follow_ups is not None and self.follow_up is not None and fresh.height:
            context.report.counts["follow_ups_sent"] += self.follow_up.send(self.follow_ups(fresh))
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
        """The first row of each key in the batch, minus keys already in the window."""
        keys = list(self.spec.key_columns)
        frame = pl.from_arrow(rows).unique(subset=keys, keep="first", maintain_order=True)
        if frame.height == 0:
            return frame
        known = (
            scan_snapshot(table)
            .filter(
                pl.col(PARTITION_COLUMN).is_in(
                    dedup_window(context.ingestion_date, self.dedup_window_days)
                )
            )
            .select(keys)
            .join(frame.lazy().select(keys), on=keys, how="semi")
            .collect()
        )
        if known.height:
            frame = frame.join(known, on=keys, how="anti", maintain_order="left")
        return frame
