"""A run of a replicated table: its offset ranges read from Kafka, decoded, and applied to
PostgreSQL batch by batch, each batch in one transaction with the offsets it consumed.

A record that cannot be decoded or stored goes to the validation topic with its reason (the
original bytes and ``__dlq.errors.*`` headers, so the replay job can resubmit a corrected one);
an event older than its row goes to the staleness audit, in the table (same transaction) and on
its topic. A Kafka tombstone (the null after a delete) is skipped. Consumer-group offsets are
committed after each transaction, for Kafka's lag tools; ``_cdc_offsets`` holds the truth.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from confluent_kafka import Message

from pipeline_defs.lib.cdc.ddl import ensure_table
from pipeline_defs.lib.cdc.envelope import parse_change
from pipeline_defs.lib.cdc.model import ChangeEvent, TableSpec
from pipeline_defs.lib.cdc.sink import ApplyResult, apply
from pipeline_defs.lib.dlq.records import DeadLetterTopic, dead_letter
from pipeline_defs.lib.ingest.consume import next_offsets
from pipeline_defs.lib.ingest.guard import RejectedRecord, guarded
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import OutRecord, Topic, position
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.postgres.resource import PostgresResource

READ_TIMEOUT_S = 120


@dataclass(frozen=True)
class ReplicationOptions:
    schema: str
    soft_delete: bool
    stale_threshold_us: Optional[int]  # None in backfill mode: history is applied without flags
    batch_events: int


@dataclass
class ReplicationReport:
    read: int = 0
    tombstones: int = 0
    invalid: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    stale: int = 0
    flagged_old: int = 0
    already_applied: int = 0
    added_columns: list[str] = field(default_factory=list)
    invalid_columns: dict[str, int] = field(default_factory=dict)  # column named by a rejection -> count
    newest_writetime_us: Optional[int] = None

    @property
    def invalid_share(self) -> float:
        return self.invalid / self.read if self.read else 0.0

    def add(self, result: ApplyResult) -> None:
        self.inserted += result.inserted
        self.updated += result.updated
        self.deleted += result.deleted
        self.stale += result.stale
        self.flagged_old += sum(1 for row in result.audit if row.reason != "older_than_row")
        self.already_applied += result.already_applied
        self.added_columns += result.added_columns
        if result.newest_writetime_us is not None:
            self.newest_writetime_us = max(self.newest_writetime_us or 0, result.newest_writetime_us)


@dataclass
class Replicator:
    kafka: KafkaResource
    postgres: PostgresResource
    spec: TableSpec
    validation: DeadLetterTopic
    staleness: Topic
    group_id: str
    run_id: str
    options: ReplicationOptions

    def run(self, ranges: Sequence[OffsetRange]) -> ReplicationReport:
        report = ReplicationReport()
        with self.postgres.connect(autocommit=True) as conn:
            ensure_table(conn, self.spec, self.options.schema, self.options.soft_delete)
            for batch in self.kafka.read_ranges(ranges, self.group_id, self.options.batch_events, READ_TIMEOUT_S):
                events, letters = self._decode(batch, report)
                self.validation.send(letters)  # before the commit: a retried batch may send them twice, never lose them
                result = apply(
                    conn,
                    self.spec,
                    events,
                    next_offsets(batch),
                    self.group_id,
                    soft_delete=self.options.soft_delete,
                    stale_threshold_us=self.options.stale_threshold_us,
                    schema=self.options.schema,
                )
                report.add(result)
                by_position = {position(m): m for m in batch}
                refused = [dead_letter(by_position[source], why, self.group_id, self.run_id) for source, why in result.rejected]
                report.invalid += len(refused)
                self.validation.send(refused)
                self.staleness.send(OutRecord(json.dumps(asdict(row), default=str).encode()) for row in result.audit)
                self.kafka.commit_offsets(self.group_id, next_offsets(batch))
        return report

    def _decode(self, batch: list[Message], report: ReplicationReport) -> tuple[list[tuple[ChangeEvent, Any]], list[OutRecord]]:
        events: list[tuple[ChangeEvent, Any]] = []
        letters: list[OutRecord] = []
        for message in batch:
            report.read += 1
            decoded = guarded("decode change event", parse_change, message.value(), message.key(), self.spec)
            if isinstance(decoded, RejectedRecord):
                report.invalid += 1
                column = _column_named(decoded.reason, self.spec)
                if column:
                    report.invalid_columns[column] = report.invalid_columns.get(column, 0) + 1
                letters.append(dead_letter(message, decoded, self.group_id, self.run_id))
            elif decoded is None:
                report.tombstones += 1
            else:
                events.append((decoded, position(message)))
        return events, letters


def replication_lag_s(report: ReplicationReport) -> Optional[float]:
    """Now minus the newest writetime applied: how far PostgreSQL trails Cassandra."""
    if report.newest_writetime_us is None:
        return None
    return round(time.time() - report.newest_writetime_us / 1e6, 3)


def _column_named(reason: str, spec: TableSpec) -> Optional[str]:
    return next((c.name for c in spec.columns if re.search(rf"column {re.escape(c.name)}\b", reason)), None)
