"""Polling a window of a Kusto table into a Kafka topic, once in effect.

Per window: the ids the pipeline's table already holds near the window go to Kusto as the
anti-join (``seen_ids``, up to ``anti_join_max_ids``); each page that comes back is checked
again, exactly, against the table's days that could hold it, and ids already sent by this run
are skipped; the rest is produced with the id as key and every record acknowledged before the
next page. A row without an id, or that cannot be serialised, becomes a dead letter with the
reason; any other row is produced and the consuming asset validates it as it validates every
event. Re-polling a window therefore sends nothing the table would keep.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl

from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.dlq.records import DeadLetterTopic, SourceRecord, dead_letter_record, record_size
from pipeline_defs.lib.ingest.feeds import KafkaFeed
from pipeline_defs.lib.ingest.guard import RejectedRecord, guarded
from pipeline_defs.lib.ingest.sink import PARTITION_COLUMN
from pipeline_defs.lib.kafka.records import OutRecord, Topic
from pipeline_defs.lib.kusto.polling import KustoRow, page_query, window_pages
from pipeline_defs.lib.kusto.resource import KustoResource
from pipeline_defs.lib.kusto.windows import PollWindow

INGESTION_TIME_HEADER = "eventhouse.ingestion_time"


class PollSettings(dg.Config):
    """How a Kusto table is polled."""

    window_s: int = 60  # windows are aligned to multiples of this (it must divide a day)
    lag_s: float = 60.0  # a window is polled once now - lag has passed its end (ingestion latency)
    overlap_s: float = 60.0  # each window is read from start - overlap: rows that became visible late
    page_rows: int = 10_000  # rows per query
    anti_join_max_ids: int = 20_000  # known ids sent to Kusto per window; beyond, the check is client-side only
    anti_join_slack_s: float = 3_600.0  # how far the table's time column may lie from the ingestion time
    dedup_window_days: int = 1  # the days after a window's day in which the table may have filed its rows
    max_windows_per_run: int = 30  # a run catching up polls up to this many windows in a row
    backfill_window_s: int = 3_600  # a backfill of a day polls it in windows this long (paged all the same)
    max_runs_in_flight: int = 4
    replan_after_s: float = 120.0  # a window whose runs all failed is planned again after this long
    start_from: str = "now"  # now | <ISO instant>: where a new poller begins; older days are backfills


@dataclass(frozen=True)
class EventhouseSource:
    """A Kusto table polled into the source topic of a Kafka-fed asset (registered by a domain)."""

    feed: KafkaFeed  # the asset it feeds: its topic, cluster and table (the dedup's reference)
    table: str  # the Kusto table's default name (settings may rename it)
    id_column: str  # the event's id: the Kafka key, the dedup key
    time_column: str  # the table's column nearest to Kusto's ingestion time, for the anti-join
    dead_letters_of: Callable[[Any], str]  # resources -> the source topic's DLQ

    @property
    def name(self) -> str:
        return self.feed.asset_name


@dataclass
class PollOutcome:
    windows: int = 0
    pages: int = 0
    rows_read: int = 0
    produced: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    anti_join_ids: int = 0
    query_s: float = 0.0
    query_attempts: int = 0  # more than pages: Kusto throttled or failed and the query was retried
    request_ids: list[str] = field(default_factory=list)


@dataclass
class WindowPoller:
    kusto: KustoResource
    lake: DeltaLakeResource
    topic: Topic
    dead_letters: DeadLetterTopic
    source: EventhouseSource
    kusto_table: str
    settings: PollSettings
    run_id: str
    max_record_bytes: int  # the source topic's max.message.bytes: a larger row is dead-lettered

    def poll(self, windows: Sequence[PollWindow]) -> PollOutcome:
        outcome, sent = PollOutcome(), set[str]()
        query = page_query(self.kusto_table, self.source.id_column)
        overlap = timedelta(seconds=self.settings.overlap_s)
        for window in windows:
            known = self._known_near(window, overlap)
            seen = known if len(known) <= self.settings.anti_join_max_ids else set[str]()
            outcome.windows += 1
            outcome.anti_join_ids += len(seen)
            request_id = f"pipeline_defs.eventhouse_poll;{self.run_id};{window.tag}"
            for rows, answer in window_pages(self.kusto, query, window, overlap, seen, self.settings.page_rows, request_id):
                outcome.pages += 1
                outcome.rows_read += len(rows)
                outcome.query_s += answer.seconds
                outcome.query_attempts += answer.attempts
                outcome.request_ids.append(answer.activity_id or answer.client_request_id)
                self._send(rows, window, known, sent, outcome)
        return outcome

    def _send(self, rows: Sequence[KustoRow], window: PollWindow, known: set[str], sent: set[str], outcome: PollOutcome) -> None:
        records: dict[str, OutRecord] = {}
        letters: list[OutRecord] = []
        for row in rows:
            match_id = row.id.strip()  # the consuming table keeps ids stripped
            if match_id in known or match_id in sent or match_id in records:
                outcome.duplicates += 1
                continue
            built = guarded("eventhouse row", self._record, row)
            if isinstance(built, RejectedRecord):
                letters.append(self._dead_letter(row, built))
            else:
                records[match_id] = built
        held = self._held(list(records), window)
        for row_id in held:
            del records[row_id]
        outcome.duplicates += len(held)
        outcome.produced += self.topic.send(records.values())
        outcome.dead_lettered += self.dead_letters.send(letters)
        sent.update(records)

    def _record(self, row: KustoRow) -> OutRecord:
        if not row.id.strip():
            raise RejectedRecord("invalid", f"row has no {self.source.id_column}")
        if not isinstance(row.row, dict):
            raise RejectedRecord("malformed", f"row is a {type(row.row).__name__}, not an object")
        try:
            key = row.id.encode("utf-8")
        except UnicodeEncodeError:
            raise RejectedRecord("invalid", f"{self.source.id_column} is not valid Unicode text (a lone surrogate)") from None
        value = json.dumps(row.row, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        record = OutRecord(value.encode("utf-8", "surrogatepass"), key, [(INGESTION_TIME_HEADER, str(row.ticks).encode())])
        if record_size(record) > self.max_record_bytes:
            raise RejectedRecord("invalid", f"row of {record_size(record)} bytes exceeds the topic's {self.max_record_bytes}")
        return record

    def _dead_letter(self, row: KustoRow, rejection: RejectedRecord) -> OutRecord:
        try:
            value = json.dumps(row.row, ensure_ascii=True, default=repr).encode()
        except ValueError:  # NaN, cycles: the row's text form still says what it was
            value = repr(row.row).encode("utf-8", "replace")
        digest = int.from_bytes(hashlib.sha256(str(row.ticks).encode() + value).digest()[:7], "big")
        return dead_letter_record(
            value=value,
            key=row.id.encode("utf-8", "replace") or None,
            # No Kafka offset: partition -1 and a stable digest of the row stand for its place.
            source=SourceRecord(self.topic.name, -1, digest, row.ingested_at_ms),
            category=rejection.category,
            reason=f"{self.kusto_table}: {rejection.reason}",
            consumer_group=f"eventhouse.{self.source.name}",
            run_id=self.run_id,
            original_headers=[(INGESTION_TIME_HEADER, str(row.ticks).encode())],
        )

    def _days(self, window: PollWindow, overlap: timedelta) -> list[date]:
        """The days the table may have filed the window's rows under: from the window's day (the
        stream reads after Kusto ingests) to today (however late the stream or a backfill ran)."""
        first = (window.start - overlap).date()
        last = max(window.end.date() + timedelta(days=self.settings.dedup_window_days), datetime.now(UTC).date())
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]

    def _known_near(self, window: PollWindow, overlap: timedelta) -> set[str]:
        """Ids the table holds whose time lies near the window: the anti-join's candidates."""
        scan = self.lake.scan(self.source.feed.table)
        if scan is None:
            return set()
        slack = timedelta(seconds=self.settings.anti_join_slack_s)
        column = pl.col(self.source.time_column)
        frame = (
            scan.filter(pl.col(PARTITION_COLUMN).is_in(self._days(window, overlap)))
            .filter(column.is_between(window.start - overlap - slack, window.end + slack))
            .select(self.source.id_column)
            .limit(self.settings.anti_join_max_ids + 1)
            .collect()
        )
        return set(frame.to_series().to_list())

    def _held(self, ids: list[str], window: PollWindow) -> list[str]:
        """Which of ``ids`` the table already holds, on any day that could hold them."""
        scan = self.lake.scan(self.source.feed.table) if ids else None
        if scan is None:
            return []
        id_column = pl.col(self.source.id_column)
        days = self._days(window, timedelta(seconds=self.settings.overlap_s))
        held = scan.filter(pl.col(PARTITION_COLUMN).is_in(days) & id_column.is_in(ids)).select(id_column).unique().collect()
        return held.to_series().to_list()


def per_second(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 and math.isfinite(seconds) else 0.0
