"""A run of a replicated table: its offset ranges read from Kafka, decoded, and applied to
PostgreSQL batch by batch, each batch in one transaction with the offsets it consumed.

A record that cannot be decoded or stored goes to the validation topic with its reason (the
original bytes and ``__dlq.errors.*`` headers, so the replay job can resubmit a corrected one);
an event older than its row goes to the staleness audit, in the table (same transaction) and on
its topic. A record PostgreSQL refuses for reasons of its own is retried, then dead-lettered
(``failures``). A Kafka tombstone (the null after a delete) is skipped. Consumer-group offsets
are committed after each transaction, for Kafka's lag tools; ``_cdc_offsets`` holds the truth.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Optional

import psycopg
from confluent_kafka import Message

from pipeline_defs.lib.cdc.ddl import Source, applied_offsets, ensure_table
from pipeline_defs.lib.cdc.envelope import parse_change
from pipeline_defs.lib.cdc.failures import CATEGORY, RECORD_ERRORS, RecordFailing, count_failure, failure_reason
from pipeline_defs.lib.cdc.model import ChangeEvent, TableSpec
from pipeline_defs.lib.cdc.sink import ApplyResult, apply
from pipeline_defs.lib.dlq.records import DeadLetterTopic, dead_letter
from pipeline_defs.lib.ingest.consume import next_offsets
from pipeline_defs.lib.ingest.guard import RejectedRecord, guarded
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import OutRecord, Topic, position
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.postgres.resource import PostgresResource, describe, unavailable_on_failure

READ_TIMEOUT_S = 120


@dataclass(frozen=True)
class ReplicationOptions:
    schema: str
    soft_delete: bool
    stale_threshold_us: Optional[int]  # None in backfill mode: history is applied without flags
    batch_events: int
    max_record_failures: int = 10
    start_at_plan: bool = False  # a backfill's own group: a partition it never applied starts where planned


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
    dead_lettered: int = 0  # records that failed max_record_failures times
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
    dlq: DeadLetterTopic  # records that failed max_record_failures times
    staleness: Topic
    group_id: str
    run_id: str
    options: ReplicationOptions

    def applied(self) -> dict[int, int]:
        """Partition -> the next offset this group has applied (where a catch-up starts)."""
        with self.postgres.connect(autocommit=True) as conn:
            ensure_table(conn, self.spec, self.options.schema, self.options.soft_delete)
            with unavailable_on_failure("read the applied offsets"):
                return applied_offsets(conn, self.options.schema, self.group_id, self.spec.topic)

    def run(self, ranges: Sequence[OffsetRange]) -> ReplicationReport:
        report = ReplicationReport()
        with self.postgres.connect(autocommit=True) as conn:
            ensure_table(conn, self.spec, self.options.schema, self.options.soft_delete)
            with unavailable_on_failure("read the applied offsets"):
                applied = applied_offsets(conn, self.options.schema, self.group_id, self.spec.topic)
            unread, report.already_applied = self._unread(ranges, applied)
            for batch in self.kafka.read_ranges(unread, self.group_id, self.options.batch_events, READ_TIMEOUT_S):
                events, letters = self._decode(batch, report)
                self.validation.send(letters)  # before the commit: a retried batch may send them twice, never lose them
                self._apply(conn, batch, events, report)
        return report

    def _unread(self, ranges: Sequence[OffsetRange], applied: dict[int, int]) -> tuple[list[OffsetRange], int]:
        """Each range read from the offset the group has applied up to (everything below it is in
        PostgreSQL), so a later range that runs first covers an earlier one instead of hiding it.
        A partition never applied starts at the group's committed offset, else the log start, or,
        for a backfill's own group, at the planned start. Also: how many planned offsets were applied."""
        marks = dict(applied)
        unseen = sorted({r.partition for r in ranges} - marks.keys())
        if unseen and self.options.start_at_plan:
            marks.update({p: min(r.start for r in ranges if r.partition == p) for p in unseen})
        elif unseen:
            timeout = self.kafka.connection.request_timeout_s
            committed = self.kafka.committed_offsets(self.group_id, self.spec.topic, unseen, timeout)
            if len(committed) < len(unseen):
                states = self.kafka.partition_states(self.spec.topic, timeout)
                committed = {p: committed.get(p, states[p].low) for p in unseen}
            marks.update(committed)
        already = sum(max(0, min(r.end, marks[r.partition]) - r.start) for r in ranges)
        return [
            OffsetRange(r.topic, r.partition, marks[r.partition], r.end) for r in ranges if marks[r.partition] < r.end
        ], already

    def _apply(
        self, conn: psycopg.Connection, batch: list[Message], events: dict[Source, ChangeEvent], report: ReplicationReport
    ) -> None:
        """Apply ``batch`` in one transaction; when a record of it makes PostgreSQL refuse the
        transaction, apply each half on its own until that record is alone (``failures``)."""
        try:
            result = self._apply_events(conn, [p for p in map(position, batch) if p in events], events, next_offsets(batch))
        except RECORD_ERRORS as error:
            if len(batch) > 1:
                half = len(batch) // 2
                self._apply(conn, batch[:half], events, report)
                self._apply(conn, batch[half:], events, report)
            else:
                self._failed(conn, batch[0], error, events, report)
            return
        report.add(result)
        by_position = {position(m): m for m in batch}
        refused = [dead_letter(by_position[source], why, self.group_id, self.run_id) for source, why in result.rejected]
        report.invalid += len(refused)
        self.validation.send(refused)
        self.staleness.send(OutRecord(json.dumps(asdict(row), default=str).encode()) for row in result.audit)
        self.kafka.commit_offsets(self.group_id, next_offsets(batch))

    def _apply_events(
        self,
        conn: psycopg.Connection,
        sources: list[Source],
        events: dict[Source, ChangeEvent],
        offsets: dict[tuple[str, int], int],
        dry_run: bool = False,
    ) -> ApplyResult:
        return apply(
            conn,
            self.spec,
            [(events[s], s) for s in sources],
            offsets,
            self.group_id,
            soft_delete=self.options.soft_delete,
            stale_threshold_us=self.options.stale_threshold_us,
            schema=self.options.schema,
            dry_run=dry_run,
        )

    def _failed(
        self,
        conn: psycopg.Connection,
        message: Message,
        error: BaseException,
        events: dict[Source, ChangeEvent],
        report: ReplicationReport,
    ) -> None:
        source = position(message)
        if self._refuses_all(conn, [p for p in events if p != source], events):
            raise RecordFailing(f"PostgreSQL refuses every record of {self.spec.pg_table}, not one: {describe(error)}") from None
        failures = count_failure(conn, self.options.schema, self.group_id, source, error)
        reason = failure_reason(source, failures, error)
        if failures < self.options.max_record_failures:
            raise RecordFailing(f"{reason} (the DLQ takes it at {self.options.max_record_failures})") from None
        self.dlq.send([dead_letter(message, RejectedRecord(CATEGORY, reason), self.group_id, self.run_id)])
        report.dead_lettered += 1
        self._apply(conn, [message], {}, report)  # stores its offset, applies nothing

    def _refuses_all(self, conn: psycopg.Connection, others: list[Source], events: dict[Source, ChangeEvent]) -> bool:
        """Whether the batch's other records fail too, tried in a transaction rolled back: then
        the table is to blame (a trigger refusing everything) and no record is counted. With no
        other record to try, the record is blamed."""
        if not others:
            return False
        try:
            self._apply_events(conn, others, events, {}, dry_run=True)
        except RECORD_ERRORS:
            return True
        return False

    def _decode(self, batch: list[Message], report: ReplicationReport) -> tuple[dict[Source, ChangeEvent], list[OutRecord]]:
        events: dict[Source, ChangeEvent] = {}
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
                events[position(message)] = decoded
        return events, letters


def replication_lag_s(report: ReplicationReport) -> Optional[float]:
    """Now minus the newest writetime applied: how far PostgreSQL trails Cassandra."""
    if report.newest_writetime_us is None:
        return None
    return round(time.time() - report.newest_writetime_us / 1e6, 3)


def _column_named(reason: str, spec: TableSpec) -> Optional[str]:
    return next((c.name for c in spec.columns if re.search(rf"column {re.escape(c.name)}\b", reason)), None)
