"""A record PostgreSQL refuses for reasons of its own (here a trigger a DBA added), on the real
broker and PostgreSQL: the records around it are applied at the first attempt, each attempt
fails the step and is counted, and the tenth sends the record to the DLQ and lets the table go
on; a refusal that is the table's (every record fails) is never blamed on a record."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import psycopg
import pytest
from psycopg import sql

from pipeline_defs.defs.cdc.assets import replicator
from pipeline_defs.lib.cdc.ddl import ensure_table
from pipeline_defs.lib.cdc.envelope import parse_change
from pipeline_defs.lib.cdc.failures import RecordFailing
from pipeline_defs.lib.cdc.model import TableSpec
from pipeline_defs.lib.cdc.replicate import ReplicationReport
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs_tests.defs.cdc.test_cdc_replication import expected_rows, table_rows
from pipeline_sim.cdc import CdcSource

EVENTS = 300


def replicate(resources: dict[str, object], spec: TableSpec, ranges: list[OffsetRange]) -> ReplicationReport:
    """One attempt of a run of the table (what a step's retry does again)."""
    return replicator(SimpleNamespace(**resources), spec, uuid.uuid4().hex).run(ranges)


def poisoned(records: list[tuple[bytes, bytes]], spec: TableSpec) -> int:
    """The writetime of an insert no later record touches: the trigger refuses exactly it."""
    keys = [key for key, _ in records]
    for key, value in reversed(records):
        event = parse_change(value, key, spec)
        if event is not None and event.op.value == "c" and keys.count(key) == 1:
            return event.writetime_us
    raise AssertionError("no insert to poison")


def refuse(conninfo: str, schema: str, spec: TableSpec, condition: str) -> None:
    table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(spec.pg_table))
    function = sql.Identifier(schema, "refuse")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF {c} THEN "
                "RAISE EXCEPTION 'refused by a trigger'; END IF; RETURN NEW; END $$"
            ).format(f=function, c=sql.SQL(condition))
        )
        conn.execute(
            sql.SQL("CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
                table, function
            )
        )


@pytest.fixture
def produced(kafka, cdc_topics, resources) -> tuple[TableSpec, list[tuple[bytes, bytes]], list[OffsetRange]]:
    spec = cdc_topics.tables[0].spec()
    source = CdcSource((spec,), dirty_rate=0)
    records = [(e.key, e.value) for e in (source.next() for _ in range(EVENTS)) if e.value is not None]
    kafka.produce(spec.topic, [OutRecord(value=v, key=k) for k, v in records])
    states = kafka.partition_states(spec.topic, 10)
    with resources["cdc_postgres"].connect() as conn:
        ensure_table(conn, spec, cdc_topics.pg_schema)
    return spec, records, [OffsetRange(spec.topic, p, s.low, s.high) for p, s in states.items()]


def test_a_refused_record_is_retried_then_dead_lettered_and_the_rest_applied(
    resources, cdc_topics, cdc_database, consume_all, produced
) -> None:
    spec, records, ranges = produced
    poison = poisoned(records, spec)
    refuse(cdc_database, cdc_topics.pg_schema, spec, f"NEW._cdc_writetime = {poison}")
    wanted, _ = expected_rows(spec, records)
    held = []
    for attempt in range(1, 10):
        with pytest.raises(RecordFailing, match=rf"failed {attempt} times: RaiseException \[P0001\]: refused by a trigger"):
            replicate(resources, spec, ranges)
        held.append(len(table_rows(cdc_database, cdc_topics.pg_schema, spec)))
    assert held[0] > 0 and set(held) == {held[0]}  # what precedes it went in at the first attempt, once
    report = replicate(resources, spec, ranges)
    assert report.dead_lettered == 1
    (letter,) = consume_all(cdc_topics.dlq_topic)
    headers = {k: v.decode() for k, v in letter.headers()}
    assert headers["__dlq.errors.category"] == "unprocessable" and "failed 10 times" in headers["__dlq.errors.reason"]
    assert consume_all(cdc_topics.validation_topic) == []
    with psycopg.connect(cdc_database) as conn:
        stored = conn.execute(
            sql.SQL('SELECT sum(next_offset) FROM {}."_cdc_offsets"').format(sql.Identifier(cdc_topics.pg_schema))
        ).fetchone()
    assert stored == (sum(r.end for r in ranges),)
    assert table_rows(cdc_database, cdc_topics.pg_schema, spec) == {k: w for k, w in wanted.items() if w != poison}
    again = replicate(resources, spec, ranges)  # the same ranges once more: all applied, the poisoned one skipped
    assert (again.read, again.already_applied, again.dead_lettered) == (0, sum(r.end - r.start for r in ranges), 0)


def test_a_table_refusing_every_record_blames_none(resources, cdc_topics, cdc_database, consume_all, produced) -> None:
    spec, _, ranges = produced
    refuse(cdc_database, cdc_topics.pg_schema, spec, "true")
    for _ in range(11):
        with pytest.raises(RecordFailing, match=r"refuses every record of .*, not one: RaiseException"):
            replicate(resources, spec, ranges)
    assert consume_all(cdc_topics.dlq_topic) == []
    with psycopg.connect(cdc_database) as conn:
        counted = conn.execute(
            sql.SQL('SELECT count(*) FROM {}."_cdc_record_failures"').format(sql.Identifier(cdc_topics.pg_schema))
        ).fetchone()
    assert counted == (0,)
