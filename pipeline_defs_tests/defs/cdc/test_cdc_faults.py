"""CDC replication under faults, through the table's asset on the test stack's broker and a real
PostgreSQL: the server stopped after a run's first batch and started again before its retry, a
run killed -9 inside its transaction, and three concurrent runs on disjoint partitions with one
of them killed. Each ends with the table equal to the oracle, ``_cdc_offsets`` at the log ends
and every event applied once: the simulator's writetimes are months old, so each event a batch
applies leaves one row in ``cdc_staleness_audit``, and an event applied twice would leave two."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, TypeVar

import dagster as dg
import psycopg
import pytest
from confluent_kafka import Message
from psycopg import sql

from pipeline_defs.defs.cdc import table_parts
from pipeline_defs.defs.cdc.assets import asset_name
from pipeline_defs.defs.cdc.settings import CdcConfigResource, CdcSettings
from pipeline_defs.lib.cdc import replicate
from pipeline_defs.lib.cdc.ddl import WRITETIME, ensure_table, table_ident
from pipeline_defs.lib.cdc.envelope import parse_change
from pipeline_defs.lib.cdc.model import ChangeEvent, Op, TableSpec
from pipeline_defs.lib.cdc.sink import ApplyResult
from pipeline_defs.lib.dlq.records import error_headers
from pipeline_defs.lib.ingest.guard import RejectedRecord
from pipeline_defs.lib.kafka.ranges import RANGES_TAG, TOPIC_TAG, OffsetRange, encode_ranges
from pipeline_defs.lib.kafka.records import position
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.postgres.resource import PostgresConnection, PostgresResource
from pipeline_defs_tests.defs.cdc.test_cdc_replication import expected_rows, produce, table_rows
from pipeline_defs_tests.support.cdc_runs import RunProcess, run_params
from pipeline_defs_tests.support.kafka import metadata_of
from pipeline_defs_tests.support.stack import TEST_STACK, LocalStack

T = TypeVar("T")
EVENTS = 1_500
BATCH = 100  # events per transaction: several batches per partition
WAIT_S = 120.0
# A PostgreSQL of this module's own to stop and start (PgBouncer on 16533); Kafka is the test stack's.
PGFAULT = LocalStack.named("pgfault", "PGFAULT", kafka=TEST_STACK.kafka_port, azurite=TEST_STACK.azurite_port, pg=15533)


def wait_for(what: str, check: Callable[[], Optional[T]]) -> T:
    deadline = time.monotonic() + WAIT_S
    while (found := check()) is None:
        assert time.monotonic() < deadline, f"waited {WAIT_S:.0f}s for {what}"
        time.sleep(0.1)
    return found


class Record(NamedTuple):
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]


def decoded(spec: TableSpec, record: Record) -> ChangeEvent | RejectedRecord | None:
    """The record's change event, why it is invalid, or None (a tombstone)."""
    try:
        return parse_change(record.value, record.key, spec)
    except RejectedRecord as rejected:
        return rejected


def valid_event(spec: TableSpec, record: Record) -> Optional[ChangeEvent]:
    return event if isinstance(event := decoded(spec, record), ChangeEvent) else None


@dataclass
class Target:
    """The replicated table, its bookkeeping and its topics."""

    conninfo: str
    schema: str
    spec: TableSpec
    group: str
    kafka: KafkaResource
    validation_topic: str

    def query(self, statement: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return conn.execute(sql.SQL(statement).format(s=sql.Identifier(self.schema)), params).fetchall()

    def offsets(self) -> dict[int, int]:
        query = 'SELECT "partition", next_offset FROM {s}."_cdc_offsets" WHERE consumer_group = %s AND topic = %s'
        return dict(self.query(query, self.group, self.spec.topic))

    def ends(self) -> dict[int, int]:
        return {p: s.high for p, s in self.kafka.partition_states(self.spec.topic, 10).items() if s.high > 0}

    def records(self, consume_all: Callable[[str], list[Message]]) -> list[Record]:
        return sorted(Record(*position(m)[1:], m.key(), m.value()) for m in consume_all(self.spec.topic))

    def letters(self, consume_all: Callable[[str], list[Message]]) -> set[tuple[int, int]]:
        """Source positions of the records dead-lettered to the validation topic."""
        headers = [error_headers(m) for m in consume_all(self.validation_topic)]
        return {(int(h["partition"]), int(h["offset"])) for h in headers if h["topic"] == self.spec.topic}

    def assert_holds(self, records: list[Record], below: dict[int, int], letters: set[tuple[int, int]]) -> None:
        """The table is the oracle of the events below ``below`` (partition -> next offset); each
        of them was applied once, or dead-lettered."""
        kept = [r for r in records if r.offset < below.get(r.partition, 0)]
        wanted, _ = expected_rows(self.spec, [(r.key, r.value) for r in kept])
        rows = table_rows(self.conninfo, self.schema, self.spec)
        assert rows.keys() == wanted.keys(), f"{len(rows)} rows, expected {len(wanted)}"
        assert rows == wanted, "a row does not hold its newest event's writetime"
        audited = self.query('SELECT "partition", "offset" FROM {s}.cdc_staleness_audit')
        assert len(audited) == len(set(audited)), "an event was applied twice"
        valid = {r[:2] for r in kept if (e := valid_event(self.spec, r)) and e.range_delete is None}
        assert set(audited) <= valid, "an event beyond the committed offsets is in the table"
        assert valid - set(audited) <= letters, "an event was neither applied nor dead-lettered"


def replicating(resources: dict[str, Any], kafka: KafkaResource, conninfo: str, **changes: Any) -> tuple[dict[str, Any], Target]:
    """``resources`` with batches of ``BATCH`` and cdc ``changes`` (a new PostgreSQL resource: a
    fresh circuit breaker), and the first declared table as the target."""
    settings = CdcSettings(**{**resources["cdc"].settings.model_dump(), "batch_events": BATCH, **changes})
    postgres = PostgresResource(connection=settings.postgres)
    spec = settings.tables[0].spec()
    target = Target(
        conninfo, settings.pg_schema, spec, resources["ingest"].consumer_group(asset_name(spec)), kafka, settings.validation_topic
    )
    return {**resources, "cdc": CdcConfigResource(settings=settings), "cdc_postgres": postgres}, target


def error_classes(error: Any) -> set[str]:
    return set() if error is None else {error.cls_name, *error_classes(error.cause), *error_classes(error.context)}


@pytest.fixture
def private_db(test_stack: LocalStack) -> Iterator[str]:
    """A database on PGFAULT, which the test may stop and start: dropped, and PGFAULT stopped, after it."""
    name = f"cdc_fault_{uuid.uuid4().hex[:12]}"
    admin = f"host=127.0.0.1 port={PGFAULT.pg_port} user=postgres dbname=postgres"
    PGFAULT.run("up", "postgres")
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield name
        PGFAULT.run("up", "postgres")  # idempotent: the test may have left it stopped
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        PGFAULT.run("down", "postgres")


def test_postgres_stopped_after_a_batch_and_started_before_the_retry_loses_and_doubles_nothing(
    private_db, resources, instance, kafka, cdc_topics, consume_all, monkeypatch
) -> None:
    server = PostgresConnection(port=PGFAULT.pg_port, dbname=private_db, connect_timeout_s=5)
    conninfo = f"host=127.0.0.1 port={PGFAULT.pg_port} user=postgres dbname={private_db}"
    res, target = replicating(resources, kafka, conninfo, postgres=server)
    produce(kafka, (target.spec,), 3_000)
    applied: list[ApplyResult] = []
    attempts: list[int] = []
    original_apply, original_applied = replicate.apply, replicate.Replicator.applied

    def apply_then_stop(conn: psycopg.Connection, spec: TableSpec, events: list, *args: Any, **kwargs: Any) -> ApplyResult:
        result = original_apply(conn, spec, events, *args, **kwargs)
        applied.append(result)
        if len(applied) == 1:  # the first batch is committed: the server goes away
            PGFAULT.run("down", "postgres")
        return result

    def restarted_for_the_retry(self: replicate.Replicator) -> dict[int, int]:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 2:  # the step's retry: the server is back
            PGFAULT.run("up", "postgres")
        return original_applied(self)

    monkeypatch.setattr(replicate, "apply", apply_then_stop)
    monkeypatch.setattr(replicate.Replicator, "applied", restarted_for_the_retry)
    asset, _, _ = table_parts(target.spec)
    result = dg.materialize([asset], resources=res, instance=instance)  # a Materialize click: the whole topic

    assert result.success and attempts == [1, 2]
    events = result.all_events
    (retried,) = [e for e in events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert "PostgresUnavailable" in error_classes(retried.event_specific_data.error)  # type: ignore[union-attr]
    assert not [e for e in events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    ends = target.ends()
    report = metadata_of(result)  # the retry's report: it starts after the first batch, committed
    assert (report["already_applied"], report["events_read"]) == (0, sum(ends.values()) - BATCH)
    assert target.offsets() == ends
    records = target.records(consume_all)
    letters = target.letters(consume_all)
    target.assert_holds(records, ends, letters)
    # The outage sent nothing to the validation topic: only records that cannot be decoded or stored.
    invalid = {r[:2] for r in records if isinstance(decoded(target.spec, r), RejectedRecord)}
    refused = {(source[1], source[2]) for r in applied for source, _ in r.rejected}
    assert letters == invalid | refused and invalid


@contextmanager
def held_row(target: Target, key: dict[str, Any]) -> Iterator[psycopg.Connection]:
    """An uncommitted row of ``key``: a run upserting that key waits for this transaction, inside
    its own (after its batch's other rows are staged); rolled back on leaving."""
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        ensure_table(conn, target.spec, target.schema)
    with psycopg.connect(target.conninfo) as conn:  # not autocommit: the INSERT opens the transaction
        columns = sql.SQL(", ").join(map(sql.Identifier, [*key, WRITETIME]))
        insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table_ident(target.spec, target.schema), columns, sql.SQL(", ").join(sql.Placeholder() * (len(key) + 1))
        )
        conn.execute(insert, [*key.values(), 0])
        yield conn
        conn.rollback()


def late_key(target: Target, records: list[Record], partition: int) -> tuple[int, dict[str, Any]]:
    """A key of ``partition`` first written past its middle and never deleted: its first offset and the key."""
    mine = [(r.offset, e) for r in records if r.partition == partition and (e := valid_event(target.spec, r))]
    deleted = {tuple(e.key.values()) for _, e in mine if e.op is Op.DELETE or e.range_delete is not None}
    seen: set[tuple] = set()
    for offset, event in mine:
        key = tuple(event.key.values())
        if offset >= mine[len(mine) // 2][0] and key not in seen | deleted:
            return offset, event.key
        seen.add(key)
    raise AssertionError(f"no key of partition {partition} is first written past its middle")


def blocked_backend(target: Target, holder: psycopg.Connection, run: RunProcess) -> int:
    """The pid of ``run``'s backend, once it waits on ``holder``'s row inside its transaction."""

    def waiting() -> Optional[int]:
        run.assert_running()
        # backend_xid: it has written in its transaction (its stage, its offset rows) before it waits
        waiting = "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid)) AND backend_xid IS NOT NULL"
        rows = target.query(waiting, holder.info.backend_pid)
        return rows[0][0] if rows else None

    return wait_for("the run's transaction to wait on the held row", waiting)


def assert_killed_transaction_left_nothing(target: Target, pid: int, records: list[Record], consume_all: Any) -> dict[int, int]:
    """Once PostgreSQL has ended the killed run's backend, the table and the audit hold exactly
    the batches whose offsets committed; those offsets."""
    alive = "SELECT 1 FROM pg_stat_activity WHERE pid = %s"
    wait_for("PostgreSQL to end the killed run's backend", lambda: None if target.query(alive, pid) else True)
    committed = target.offsets()
    target.assert_holds(records, committed, target.letters(consume_all))
    return committed


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[[dict[str, Any], str], RunProcess]]:
    """Start runs in processes of their own; any still running at the end is killed."""
    runs: list[RunProcess] = []

    def start(params: dict[str, Any], name: str) -> RunProcess:
        runs.append(RunProcess.start(params, tmp_path / f"{name}.log"))
        return runs[-1]

    yield start
    for run in runs:
        run.kill(WAIT_S)


def test_a_run_killed_inside_its_transaction_leaves_nothing_and_a_rerun_completes(
    resources, instance, kafka, cdc_topics, cdc_database, consume_all, processes
) -> None:
    res, target = replicating(resources, kafka, cdc_database)
    produce(kafka, (target.spec,), EVENTS)
    records = target.records(consume_all)
    held_at, key = late_key(target, records, 0)
    with held_row(target, key) as holder:
        run = processes(run_params(res, target.spec, {}), "killed")  # a Materialize click
        pid = blocked_backend(target, holder, run)
        run.kill(WAIT_S)
    committed = assert_killed_transaction_left_nothing(target, pid, records, consume_all)
    assert sum(committed.values()) >= BATCH and committed.get(0, 0) <= held_at, "not killed mid-run"

    asset, _, _ = table_parts(target.spec)
    rerun = dg.materialize([asset], resources=res, instance=instance)
    ends = target.ends()
    again, done = metadata_of(rerun), sum(committed.values())  # it starts after the committed batches
    assert (again["already_applied"], again["events_read"]) == (0, sum(ends.values()) - done)
    assert target.offsets() == ends
    target.assert_holds(records, ends, target.letters(consume_all))


def test_three_concurrent_runs_on_disjoint_partitions_one_killed_lose_and_double_nothing(
    resources, instance, kafka, cdc_topics, cdc_database, consume_all, processes
) -> None:
    res, target = replicating(resources, kafka, cdc_database)
    produce(kafka, (target.spec,), EVENTS)
    records = target.records(consume_all)
    ends = target.ends()
    assert sorted(ends) == [0, 1, 2], f"expected three partitions with events, got {ends}"

    ranges = {p: OffsetRange(target.spec.topic, p, 0, end) for p, end in ends.items()}
    tags = {p: {TOPIC_TAG: r.topic, RANGES_TAG: encode_ranges([r])} for p, r in ranges.items()}  # one partition a run

    killed = 1
    held_at, key = late_key(target, records, killed)
    with held_row(target, key) as holder:
        runs = {p: processes(run_params(res, target.spec, tags[p]), f"partition-{p}") for p in ends}
        pid = blocked_backend(target, holder, runs[killed])
        for partition, run in runs.items():
            if partition != killed:
                run.finish(WAIT_S)  # while the killed one holds its transaction open
        runs[killed].kill(WAIT_S)
    committed = assert_killed_transaction_left_nothing(target, pid, records, consume_all)
    assert {p: n for p, n in committed.items() if p != killed} == {p: n for p, n in ends.items() if p != killed}
    assert BATCH <= committed.get(killed, 0) <= held_at, "not killed mid-run"

    asset, _, _ = table_parts(target.spec)
    rerun = dg.materialize([asset], tags=tags[killed], resources=res, instance=instance)
    assert rerun.success
    assert target.offsets() == ends
    target.assert_holds(records, ends, target.letters(consume_all))
