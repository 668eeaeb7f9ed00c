"""The CDC replication: the simulator's Debezium envelopes for both demo Cassandra tables ->
each table's offset-range sensor -> runs launched by dagster-daemon -> PostgreSQL. An event is
visible once ``_cdc_offsets`` holds a next offset past it: the offsets are committed in the
transaction that writes the rows, so that is the moment a reader can see them. Two figures:
a backlog drained (clock from the first sensor-planned run, as the XACT figure) and produce ->
visible at a steady rate with the daemon keeping up.

``ingest.max_runs_in_flight`` is the default (2): two runs of a table may be in flight, each
reading its ranges from the offset the table's group has applied up to, so a later range that
runs first covers an earlier one (``already_applied`` in each figure's ``applied`` counts the
planned offsets a run found applied already, not events lost)."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import dagster as dg
import psycopg
from confluent_kafka import KafkaError, Message
from psycopg import sql

from bench.daemon import PipelineUnderTest, pipeline, wait_until
from bench.ingest import produce
from bench.streaming import Visibility
from pipeline_defs.defs.cdc.assets import asset_name
from pipeline_defs.defs.cdc.settings import CdcSettings
from pipeline_defs.lib.cdc.model import TableSpec
from pipeline_defs.lib.kafka.records import position
from pipeline_defs.lib.settings import IngestSettings
from pipeline_defs_tests.support.domains.cdc import declared
from pipeline_defs_tests.support.stack import LocalStack
from pipeline_sim.cdc import DEMO_TABLES, CdcSource, Envelope

SCHEMA = "cdc"
# CdcSource picks a random known row for each change (a list of all its rows per event), so a
# long stream comes from fresh sources of this many events each: keys are random uuids.
SOURCE_EVENTS = 20_000
POLL_S = 0.15  # how often the latency run reads _cdc_offsets
# Run metadata summed over a benchmark's runs (already_applied: offsets another run had applied).
RUNS_IN_FLIGHT = IngestSettings.model_fields["max_runs_in_flight"].default  # the default, 2
REPORTED = ("events_read", "inserted", "updated", "deleted", "stale", "invalid", "tombstones_skipped", "already_applied")


@dataclass
class CdcUnderTest:
    """The pipeline, its replicated tables and the database they land in."""

    run: PipelineUnderTest
    specs: tuple[TableSpec, ...]
    conninfo: str
    settings: dict[str, Any]
    _conn: Optional[psycopg.Connection] = None

    @property
    def groups(self) -> list[str]:
        return [self.run.resources["ingest"].consumer_group(asset_name(spec)) for spec in self.specs]

    def committed(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the next offset PostgreSQL holds (nothing before the first run)."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo, autocommit=True)
        query = 'SELECT topic, "partition", next_offset FROM cdc."_cdc_offsets" WHERE consumer_group = ANY(%s)'
        try:
            return {(t, p): n for t, p, n in self._conn.execute(query, [self.groups]).fetchall()}
        except psycopg.errors.UndefinedTable:
            return {}

    def visible(self) -> int:
        return sum(self.committed().values())

    def behind_log_end(self) -> int:
        """Offsets between ``_cdc_offsets`` and each partition's log end (0: every one applied)."""
        committed, kafka = self.committed(), self.run.resources["kafka"]
        return sum(
            max(0, state.high - committed.get((spec.topic, p), 0))
            for spec in self.specs
            for p, state in kafka.partition_states(spec.topic, 30).items()
        )

    def rows(self) -> dict[str, int]:
        with psycopg.connect(self.conninfo) as conn:
            count = "SELECT count(*) FROM {}.{}"
            return {
                s.pg_table: conn.execute(sql.SQL(count).format(sql.Identifier(SCHEMA), sql.Identifier(s.pg_table))).fetchone()[0]  # type: ignore[index]
                for s in self.specs
            }

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@contextmanager
def cdc_pipeline(
    stack: LocalStack, *, max_events_per_run: int, batch_events: int, max_runs_in_flight: int
) -> Iterator[CdcUnderTest]:
    """The demo tables under a keyspace of their own, declared to the code location through
    the environment (as ``deploy/run.sh`` does), replicated into a database of their own."""
    keyspace = f"bench_{uuid.uuid4().hex[:8]}"
    specs = tuple(replace(spec, keyspace=keyspace) for spec in DEMO_TABLES)
    admin = f"host=127.0.0.1 port={stack.pg_port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(keyspace)))
    settings = {
        "cdc.batch_events": batch_events,
        "ingest.max_events_per_run": max_events_per_run,
        "ingest.max_runs_in_flight": max_runs_in_flight,
    }
    topics = {name: info.default for name, info in CdcSettings.model_fields.items() if name.endswith("_topic")}
    env = {
        "PIPELINE_CDC__POSTGRES__PORT": str(stack.pg_port),  # straight on PostgreSQL, as deploy/run.sh
        "PIPELINE_CDC__POSTGRES__DBNAME": keyspace,
        "PIPELINE_CDC__PG_SCHEMA": SCHEMA,
        "PIPELINE_CDC__TABLES": json.dumps([declared(spec).model_dump() for spec in specs]),
        "PIPELINE_CDC__BATCH_EVENTS": str(batch_events),
        "PIPELINE_INGEST__MAX_RUNS_IN_FLIGHT": str(max_runs_in_flight),
        **{f"PIPELINE_CDC__{name.upper()}": f"{keyspace}.{topic}" for name, topic in topics.items()},  # validation, ...
    }
    under_test: Optional[CdcUnderTest] = None
    try:
        with pipeline(stack, max_events_per_run=max_events_per_run, extra_env=env) as run:
            conninfo = f"host=127.0.0.1 port={stack.pg_port} user=postgres dbname={keyspace}"
            under_test = CdcUnderTest(run, specs, conninfo, settings)
            yield under_test
    finally:
        if under_test is not None:
            under_test.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(keyspace)))


def envelopes(specs: tuple[TableSpec, ...], dirty_rate: float, seed: int = 1) -> Iterator[Envelope]:
    """The simulator's change events, writetimes from now (older than ``stale_after_days`` they
    would all be audited as stale: a replay, not a live stream)."""
    rng = random.Random(seed)
    while True:
        source = CdcSource(specs, rng, dirty_rate=dirty_rate)
        source.clock_us = time.time_ns() // 1000
        for _ in range(SOURCE_EVENTS):
            yield source.next()


def produce_backlog(cdc: CdcUnderTest, count: int, dirty_rate: float) -> Counter[str]:
    """``count`` envelopes onto the tables' topics, keyed as Debezium keys them; their kinds."""
    kinds: Counter[str] = Counter()
    stream = envelopes(cdc.specs, dirty_rate)
    for start in range(0, count, SOURCE_EVENTS):
        chunk: dict[str, list[Envelope]] = defaultdict(list)
        for _ in range(min(SOURCE_EVENTS, count - start)):
            envelope = next(stream)
            chunk[envelope.topic].append(envelope)
            kinds[envelope.kind] += 1
        for topic, records in chunk.items():
            produce(cdc.run.resources["kafka"], topic, len(records), make=lambda i, r=records: (r[i].value, r[i].key))
    return kinds


def throughput(stack: LocalStack, count: int = 600_000, max_events_per_run: int = 200_000, batch_events: int = 10_000, max_runs_in_flight: int = RUNS_IN_FLIGHT, dirty_rate: float = 0.0) -> dict:  # fmt: skip
    """A backlog of ``count`` change events drained through the daemon: the clock runs from
    the first sensor-planned run to the poll that finds every offset committed."""
    with cdc_pipeline(
        stack, max_events_per_run=max_events_per_run, batch_events=batch_events, max_runs_in_flight=max_runs_in_flight
    ) as cdc:
        started = time.perf_counter()
        kinds = produce_backlog(cdc, count, dirty_rate)
        print(f"[bench] produced {count} change events in {time.perf_counter() - started:.1f}s", flush=True)
        started_wall, started = time.time(), time.monotonic()
        cdc.run.start_daemon()
        series: list[tuple[float, int]] = []

        def done() -> bool:
            series.append((round(time.monotonic() - started, 2), cdc.visible()))
            return series[-1][1] >= count

        assert wait_until(done, timeout_s=1800, every_s=0.5), f"{series[-1][1]} of {count} visible after 30 min"
        finished_wall = time.time()
        runs = cdc_runs(cdc)
        first_planned = min(r.create_timestamp.timestamp() for r in runs)
        seconds = finished_wall - first_planned
        return {
            "events": count,
            "dirty_rate": dirty_rate,
            **cdc.settings,
            "runs": len(runs),
            "run_seconds": sorted(round(r.end_time - r.start_time, 1) for r in runs if r.end_time and r.start_time),
            "seconds_daemon_start_to_first_run": round(first_planned - started_wall, 2),
            "seconds_first_run_planned_to_done": round(seconds, 2),
            "events_per_s": round(count / seconds, 1),
            "events_per_s_from_daemon_start": round(count / (finished_wall - started_wall), 1),
            "rows": cdc.rows(),
            "behind_log_end": cdc.behind_log_end(),
            "applied": applied(cdc),
            "kinds": dict(kinds.most_common()),
            "series": series,
        }


def latency(stack: LocalStack, rate: int = 1_000, seconds: int = 120, max_events_per_run: int = 200_000, batch_events: int = 10_000, max_runs_in_flight: int = RUNS_IN_FLIGHT, dirty_rate: float = 0.0) -> dict:  # fmt: skip
    """``rate`` change events/s for ``seconds`` with the daemon running; each record's latency
    is from its produce call to the first poll (every ``POLL_S``) of ``_cdc_offsets`` past its
    offset (known from its delivery report)."""
    with cdc_pipeline(
        stack, max_events_per_run=max_events_per_run, batch_events=batch_events, max_runs_in_flight=max_runs_in_flight
    ) as cdc:
        cdc.run.start_daemon()
        stream = envelopes(cdc.specs, dirty_rate, seed=2)
        warm = [next(stream) for _ in range(20)]  # the first runs (code server, tables, offsets) land
        producer = cdc.run.resources["kafka"].producer(**{"linger.ms": 5})
        for envelope in warm:
            producer.produce(envelope.topic, value=envelope.value, key=envelope.key)
        producer.flush(30)
        assert wait_until(lambda: cdc.visible() >= len(warm), timeout_s=300), "the first CDC runs did not land"
        waiting = Waiting()
        started, sent, next_poll = time.time(), 0, 0.0
        while sent < rate * seconds:
            now = time.time()
            for _ in range(min(int((now - started) * rate), rate * seconds) - sent):
                envelope = next(stream)
                producer.produce(envelope.topic, value=envelope.value, key=envelope.key, on_delivery=waiting.sent_at(time.time()))
                sent += 1
            producer.poll(0)
            if now >= next_poll:
                next_poll = now + POLL_S
                waiting.seen(cdc.committed(), time.time(), started)
            time.sleep(0.005)
        producer.flush(30)

        def caught_up() -> bool:
            waiting.seen(cdc.committed(), time.time(), started)
            return not waiting.pending

        caught = wait_until(caught_up, timeout_s=300, every_s=POLL_S)
        runs, totals, behind = cdc_runs(cdc), applied(cdc), cdc.behind_log_end()
    figures = Visibility("cdc", "", started, latencies=[v for _, v in waiting.series]).figures()
    return {
        "rate": rate,
        "seconds": seconds,
        "produced": sent,
        "dirty_rate": dirty_rate,
        **cdc.settings,
        "runs": len(runs),
        "failed_deliveries": waiting.failed,
        "caught_up": caught,
        **figures,
        "behind_log_end": behind,
        "applied": totals,
        "series": waiting.series,
    }


@dataclass
class Waiting:
    """Delivered records not yet visible: per partition in offset order, with their produce time."""

    pending: dict[tuple[str, int], deque[tuple[int, float]]] = field(default_factory=lambda: defaultdict(deque))
    series: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, latency)
    failed: int = 0

    def sent_at(self, produced: float) -> Any:
        def report(error: Optional[KafkaError], message: Message) -> None:
            if error is not None:
                self.failed += 1
                return
            topic, partition, offset = position(message)
            self.pending[(topic, partition)].append((offset, produced))

        return report

    def seen(self, committed: dict[tuple[str, int], int], now: float, started: float) -> None:
        for tp, queue in self.pending.items():
            while queue and queue[0][0] < committed.get(tp, 0):
                _, produced = queue.popleft()
                self.series.append((round(produced - started, 3), round(now - produced, 3)))
        self.pending = defaultdict(deque, {tp: q for tp, q in self.pending.items() if q})


def cdc_runs(cdc: CdcUnderTest) -> list[dg.RunRecord]:
    jobs = {f"{asset_name(spec)}_job" for spec in cdc.specs}
    return [r for r in cdc.run.instance().get_run_records() if r.dagster_run.job_name in jobs]


def applied(cdc: CdcUnderTest) -> dict[str, int]:
    """What the runs reported, summed over every table's materializations."""
    totals: Counter[str] = Counter()
    instance = cdc.run.instance()
    for spec in cdc.specs:
        for record in instance.fetch_materializations(dg.AssetKey(asset_name(spec)), limit=10_000).records:
            metadata = record.asset_materialization.metadata if record.asset_materialization else {}
            for name in REPORTED:
                totals[name] += int(metadata[name].value) if name in metadata else 0  # type: ignore[arg-type]
    return dict(totals)
