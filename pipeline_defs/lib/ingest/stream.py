"""The streaming path: one long-lived consumer per Kafka-fed asset, committing micro-batches.

It keeps the batch path's protocol to the letter. Each micro-batch goes through the asset's own
sink and is committed to Delta together with its partitions' watermarks (``commit_batch``), and
only then are consumer-group offsets committed. A sensor-planned run, a backfill or a replay
writing the same table at the same time commits against the same watermarks, so whichever commits
second drops what the first wrote: the two paths can overlap and still write every record once.

The consumer starts at the watermarks (else the group's committed offsets, else ``start_from``).
Work is handed out in *intervals* (``report_interval_s``, never across a day boundary), which the
Dagster op turns into one materialization per day with counts, lag and latency percentiles.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Optional

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from deltalake import DeltaTable

from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.ingest.consume import commit_batch, next_offsets, not_yet_committed, watermarks
from pipeline_defs.lib.ingest.sink import PARTITION_COLUMN, BatchContext, IngestMode, IngestReport, RecordSink
from pipeline_defs.lib.kafka.clients import KafkaUnavailableError
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import position
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import IngestSettings

PARTITION_REFRESH_S = 60.0  # how often the stream looks for partitions added to its topics
# A broker answers a fetch once it holds 64 KiB or after 250 ms: under load, a few fetches a
# second per stream instead of one per record batch, for at most 0.25 s of latency.
STREAM_CONSUMER = {"enable.partition.eof": False, "fetch.min.bytes": 64 * 1024, "fetch.wait.max.ms": 250}


class StopSignal:
    """SIGINT/SIGTERM (Dagster's terminate, a pod's shutdown) as a request to stop after the
    micro-batch in hand is committed, instead of an exception in the middle of it. Listen only
    around work that commits: outside ``listening()`` the previous handlers apply."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def listening(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach only the main thread; a stream elsewhere ends by its deadline
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._request)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _request(self, _signo: int, _frame: Any) -> None:
        self.requested = True


@dataclass
class StreamInterval:
    """What the stream committed over one reporting interval of one day."""

    day: date
    sink: RecordSink
    report: IngestReport = field(default_factory=IngestReport)
    committed: dict[tuple[str, int], OffsetRange] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)  # Kafka timestamp to Delta commit
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    seconds_by_stage: dict[str, float] = field(default_factory=dict)  # where the interval's time went
    micro_batches: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def ranges(self) -> list[OffsetRange]:
        return sorted(self.committed.values(), key=lambda r: (r.topic, r.partition))

    def extend(self, topic: str, partition: int, start: int, end: int) -> None:
        known = self.committed.get((topic, partition))
        first = start if known is None else min(known.start, start)
        self.committed[(topic, partition)] = OffsetRange(topic, partition, first, max(end, known.end if known else end))


class Streamer:
    """The consumer of one feed and the loop that commits its micro-batches."""

    def __init__(
        self,
        *,
        topics: Sequence[str],
        source: KafkaResource,
        lake: DeltaLakeResource,
        group_id: str,
        run_id: str,
        new_sink: Callable[[], RecordSink],
        ingest: IngestSettings,
        log: Any,
    ) -> None:
        self.topics, self.source, self.lake, self.group_id, self.run_id = list(topics), source, lake, group_id, run_id
        self.new_sink, self.ingest, self.settings, self.log = new_sink, ingest, ingest.stream, log
        self._consumer: Optional[Consumer] = None
        self._table: Optional[DeltaTable] = None
        self._assigned: set[tuple[str, int]] = set()
        self._next_refresh = 0.0
        self._wait_s = self.settings.batch_max_wait_s
        self._offsets_owed: dict[tuple[str, int], int] = {}  # committed to Delta, not yet to the group
        self._next_offset_commit = 0.0

    def __enter__(self) -> Streamer:
        probe = self.new_sink()
        self._table = self.lake.ensure(probe.table, probe.schema, [PARTITION_COLUMN])
        self._wait_s = probe.micro_batch_wait_s(self.settings)
        self._consumer = self.source.consumer(self.group_id, **STREAM_CONSUMER)
        self._assign_new_partitions()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._consumer is not None:
            self._commit_offsets()
            self._consumer.close()

    @property
    def consumer(self) -> Consumer:
        assert self._consumer is not None, "use the streamer as a context manager"
        return self._consumer

    @property
    def table(self) -> DeltaTable:
        assert self._table is not None, "use the streamer as a context manager"
        return self._table

    def next_interval(self, stop: StopSignal, deadline: float, blocked: Callable[[], Optional[str]]) -> StreamInterval:
        """Commit micro-batches until the interval is over, the day ends, a stop is requested or
        the run's deadline passes. While ``blocked`` names a reason, nothing is consumed."""
        interval = StreamInterval(day=_today(), sink=self.new_sink())
        interval.report.counts.update({name: 0 for name in interval.sink.counters})
        ends = interval.started + self.settings.report_interval_s
        next_gate_check, waiting = 0.0, None
        while not stop.requested and time.monotonic() < min(ends, deadline) and _today() == interval.day:
            if time.monotonic() >= next_gate_check:
                reason = blocked()
                if reason != waiting and reason is not None:
                    self.log.warning(f"stream paused: {reason}")
                waiting, next_gate_check = reason, time.monotonic() + self.settings.gate_poll_s
            if waiting is not None:
                time.sleep(min(0.5, max(next_gate_check - time.monotonic(), 0)))
                continue
            self._refresh_partitions()
            with _timed(interval, "poll"):
                messages = self._poll(stop)
            if messages:
                self._commit(messages, interval)
                interval.micro_batches += 1
        interval.lag = self._lag()
        return interval

    # ---- one micro-batch ----------------------------------------------------------------
    def _poll(self, stop: StopSignal) -> list[Message]:
        """Up to ``batch_max_events`` records, waiting at most the sink's micro-batch wait for them."""
        wanted, until = self.settings.batch_max_events, time.monotonic() + self._wait_s
        batch: list[Message] = []
        while len(batch) < wanted and not stop.requested:
            self.source.raise_if_refused()
            left = until - time.monotonic()
            if left <= 0:
                break
            for message in self.consumer.consume(num_messages=min(wanted - len(batch), 10_000), timeout=left):
                error = message.error()
                if error is None:
                    batch.append(message)
                elif error.fatal() or not _transient(error):
                    raise KafkaUnavailableError(f"stream of {self.topics} failed: {error}")
                else:
                    self.log.warning(f"stream of {self.topics}: {error} (librdkafka retries)")
        return batch

    def _commit(self, messages: list[Message], interval: StreamInterval) -> None:
        report = interval.report
        context = BatchContext(
            group_id=self.group_id,
            run_id=self.run_id,
            ingestion_date=interval.day,
            mode=IngestMode.STREAM,
            report=report,
            log=self.log,
            table=self.table,
        )
        with _timed(interval, "rows"):
            self.table.update_incremental()
            report.messages_read += len(messages)
            fresh = not_yet_committed(messages, self.table, self.group_id, report)
            rows = interval.sink.rows_for(fresh, context)
        positions = next_offsets(messages)
        with _timed(interval, "commit"):
            report.rows_written += commit_batch(interval.sink, self.table, rows, positions, context)
        report.watermarks.update(positions)
        committed_at = time.time()
        for message in messages:
            _, stamp = message.timestamp()
            if stamp > 0:
                interval.latencies_s.append(max(committed_at - stamp / 1000, 0.0))
        firsts: dict[tuple[str, int], int] = {}
        for message in messages:
            topic, partition, offset = position(message)
            firsts.setdefault((topic, partition), offset)
        for (topic, partition), end in positions.items():
            interval.extend(topic, partition, firsts[(topic, partition)], end)
        self._offsets_owed.update(positions)
        if time.monotonic() >= self._next_offset_commit:
            with _timed(interval, "offsets"):
                self._commit_offsets()

    def _commit_offsets(self) -> None:
        """For Kafka's lag tools, after the Delta commit (never ahead of the data), at most every
        ``offset_commit_interval_s`` and when the stream ends: a stream restarts from its
        watermarks, so the group offset is only ever behind, never wrong."""
        if not self._offsets_owed:
            return
        owed = [TopicPartition(t, p, o) for (t, p), o in self._offsets_owed.items()]
        try:
            self.consumer.commit(offsets=owed, asynchronous=False)
            self._offsets_owed.clear()
        except KafkaException as exc:
            # The rows and watermarks are committed; the group offset catches up next time.
            self.log.warning(f"consumer offset commit for {self.group_id} failed: {exc}")
        self._next_offset_commit = time.monotonic() + self.settings.offset_commit_interval_s

    # ---- partitions ---------------------------------------------------------------------
    def _refresh_partitions(self) -> None:
        """New partitions join the stream; a broker slow to say so is asked again later."""
        if time.monotonic() < self._next_refresh:
            return
        try:
            self._assign_new_partitions()
        except KafkaUnavailableError as exc:
            self.log.warning(f"partitions of {self.topics} not refreshed: {exc}")
            self._next_refresh = time.monotonic() + PARTITION_REFRESH_S

    def _assign_new_partitions(self) -> None:
        timeout = self.source.connection.request_timeout_s
        for topic in self.topics:
            states = self.source.partition_states(topic, timeout)
            new = [p for p in states if (topic, p) not in self._assigned]
            if not new:
                continue
            starts = start_positions(self.table, topic, new, self.source, self.group_id, self.ingest.start_from)
            for partition in new:
                lost = states[partition].low - starts[partition]
                if lost > 0:
                    self.log.warning(f"{topic}[{partition}]: {lost} offsets expired before the stream read them")
            self.consumer.incremental_assign([TopicPartition(topic, p, starts[p]) for p in new])
            self._assigned.update((topic, p) for p in new)
        self._next_refresh = time.monotonic() + PARTITION_REFRESH_S

    def _lag(self) -> dict[tuple[str, int], int]:
        """Per partition, records behind the log end (from the consumer's cached watermarks)."""
        lag: dict[tuple[str, int], int] = {}
        try:
            positions = self.consumer.position([TopicPartition(t, p) for t, p in sorted(self._assigned)])
            for tp in positions:
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    lag[(tp.topic, tp.partition)] = max(high - tp.offset, 0)
        except KafkaException as exc:
            self.log.warning(f"lag of {self.topics} unknown: {exc}")
        return lag


def start_positions(
    table: Optional[DeltaTable], topic: str, partitions: Sequence[int], source: KafkaResource, group_id: str, start_from: str
) -> dict[int, int]:
    """Where a stream starts: the watermark, else the group's committed offset, else the log
    start (``earliest``) or end (``latest``, committed so a batch run would start there too)."""
    if start_from == "latest":
        timeout = source.connection.request_timeout_s
        committed = source.committed_offsets(group_id, topic, partitions, timeout)
        uncommitted = [p for p in partitions if p not in committed]
        if uncommitted:
            states = source.partition_states(topic, timeout)
            source.commit_offsets(group_id, {(topic, p): states[p].high for p in uncommitted})
    marks = watermarks(table, [OffsetRange(topic, p, 0, 0) for p in partitions], source, group_id)
    return {p: marks[(topic, p)] for p in partitions}


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3) if ordered else 0.0


@contextmanager
def _timed(interval: StreamInterval, stage: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        interval.seconds_by_stage[stage] = interval.seconds_by_stage.get(stage, 0.0) + time.monotonic() - started


def _today() -> date:
    return datetime.now(UTC).date()


def _transient(error: KafkaError) -> bool:
    """Connection trouble librdkafka recovers from by itself."""
    return error.retriable() or error.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT)
