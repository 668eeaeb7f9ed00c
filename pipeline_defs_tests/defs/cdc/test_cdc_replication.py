"""CDC end to end on the real broker and PostgreSQL: the simulator's Debezium envelopes (every
type, updates, deletes, tombstones, duplicates, out-of-order and dirty records) -> the table's
offset-range sensor -> its runs -> PostgreSQL. The oracle: for each key, the newest valid event
wins (a delete removes the row), dirty records land in the validation topic, and re-running
or re-planning the ranges changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

import dagster as dg
import psycopg
from psycopg import sql

from pipeline_defs.defs.cdc import table_parts
from pipeline_defs.defs.cdc.assets import asset_name, replicator
from pipeline_defs.defs.cdc.backfill import cdc_backfill_job
from pipeline_defs.lib.cdc.envelope import parse_change
from pipeline_defs.lib.cdc.model import ChangeEvent, Op, TableSpec
from pipeline_defs.lib.ingest.guard import RejectedRecord
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs_tests.support.kafka import metadata_of, run_all
from pipeline_sim.cdc import CdcSource

EVENTS = 1_500


def produce(kafka: KafkaResource, specs: tuple[TableSpec, ...], count: int) -> dict[str, list[tuple[bytes | None, bytes | None]]]:
    """``count`` envelopes onto the tables' topics, keyed as Debezium keys them."""
    sent: dict[str, list[tuple[bytes | None, bytes | None]]] = {spec.topic: [] for spec in specs}
    source = CdcSource(specs, dirty_rate=0.03)
    for _ in range(count):
        envelope = source.next()
        sent[envelope.topic].append((envelope.key, envelope.value))
    for topic, records in sent.items():
        kafka.produce(topic, [OutRecord(value=value, key=key) for key, value in records])  # type: ignore[arg-type]
    return sent


def expected_rows(spec: TableSpec, records: list[tuple[bytes | None, bytes | None]]) -> tuple[dict[tuple, int], int]:
    """Key -> the writetime of its newest valid event (keys whose newest event deletes them are
    absent), and how many records are invalid."""
    newest: dict[tuple, ChangeEvent] = {}
    partition_deletes: list[ChangeEvent] = []
    invalid = 0
    for key, value in records:
        try:
            event = parse_change(value, key, spec)
        except RejectedRecord:
            invalid += 1
            continue
        if event is None:
            continue
        if event.range_delete is not None:
            partition_deletes.append(event)
            continue
        row_key = tuple(event.key[c] for c in spec.primary_key)
        held = newest.get(row_key)
        if held is None or (event.writetime_us, event.op == Op.DELETE) >= (held.writetime_us, held.op == Op.DELETE):
            newest[row_key] = event

    def deleted_by_partition(row_key: tuple, event: ChangeEvent) -> bool:
        return any(
            d.writetime_us >= event.writetime_us and all(row_key[i] == v for i, v in enumerate(d.range_delete.values()))  # type: ignore[union-attr]
            for d in partition_deletes
        )

    rows = {k: e.writetime_us for k, e in newest.items() if e.op != Op.DELETE and not deleted_by_partition(k, e)}
    return rows, invalid


def table_rows(conninfo: str, schema: str, spec: TableSpec) -> dict[tuple, int]:
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in spec.primary_key)
    query = sql.SQL("SELECT {}, _cdc_writetime FROM {}.{}").format(keys, sql.Identifier(schema), sql.Identifier(spec.pg_table))
    with psycopg.connect(conninfo) as conn:
        return {tuple(row[:-1]): row[-1] for row in conn.execute(query).fetchall()}


def test_every_change_reaches_postgres_once_newest_wins(
    resources, instance, kafka, cdc_topics, cdc_database, consume_all
) -> None:
    specs = tuple(table.spec() for table in cdc_topics.tables)
    sent = produce(kafka, specs, EVENTS)
    all_invalid = 0
    for spec in specs:
        asset, _, sensor = table_parts(spec)
        results = run_all(sensor, asset, resources, instance)
        assert results, f"nothing planned for {spec.topic}"
        wanted, invalid = expected_rows(spec, sent[spec.topic])
        all_invalid += invalid
        rows = table_rows(cdc_database, cdc_topics.pg_schema, spec)
        assert rows.keys() == wanted.keys(), f"{spec.pg_table}: {len(rows)} rows, expected {len(wanted)}"
        assert rows == {k: wanted[k] for k in rows}, "a row does not hold its newest event's writetime"
        metadata = [metadata_of(r) for r in results]
        assert sum(m["events_read"] for m in metadata) == len(sent[spec.topic])
        assert sum(m["invalid"] for m in metadata) >= invalid
    letters = consume_all(cdc_topics.validation_topic)
    assert len(letters) >= all_invalid > 0  # each dirty record with its reason
    assert all(dict(m.headers() or [])["__dlq.errors.reason"] for m in letters)


def test_a_rerun_and_a_backfill_change_nothing_newer(resources, instance, kafka, cdc_topics, cdc_database) -> None:
    spec = cdc_topics.tables[0].spec()
    produce(kafka, (spec,), 400)
    asset, _, sensor = table_parts(spec)
    results = run_all(sensor, asset, resources, instance)
    before = table_rows(cdc_database, cdc_topics.pg_schema, spec)
    # Re-executing a run's exact ranges: everything is already applied.
    again = dg.materialize([asset], tags=results[0].dagster_run.tags, resources=resources, instance=instance)
    first = metadata_of(results[0])
    assert (metadata_of(again)["already_applied"], metadata_of(again)["events_read"]) == (first["events_read"], 0)
    # A backfill from offset 0 replays history under its own group: nothing older overwrites newer.
    config = {"ops": {"cdc_backfill": {"config": {"table": f"{spec.keyspace}.{spec.table}", "from_offset": 0}}}}
    backfill = cdc_backfill_job.execute_in_process(run_config=config, resources=resources, instance=instance)
    assert backfill.success
    assert table_rows(cdc_database, cdc_topics.pg_schema, spec) == before


def test_the_asset_is_named_after_its_table(cdc_specs) -> None:
    spec = cdc_specs[0]
    asset, _, _ = table_parts(spec)
    assert asset.key == dg.AssetKey(asset_name(spec)) and "postgres" in asset.specs_by_key[asset.key].kinds


def test_a_later_range_run_first_covers_the_earlier_one_instead_of_hiding_it(resources, kafka, cdc_topics, cdc_database) -> None:
    spec = cdc_topics.tables[0].spec()
    sent = produce(kafka, (spec,), 600)
    states = kafka.partition_states(spec.topic, 10)
    middle = {p: (s.low + s.high) // 2 for p, s in states.items()}
    earlier = [OffsetRange(spec.topic, p, s.low, middle[p]) for p, s in states.items()]
    later = [OffsetRange(spec.topic, p, middle[p], s.high) for p, s in states.items()]
    run = replicator(SimpleNamespace(**resources), spec, "later-first")
    first = run.run(later)  # planned second, run first: it reads from what PostgreSQL holds (nothing)
    assert first.read == sum(s.high - s.low for s in states.values())
    second = run.run(earlier)  # everything it was planned for is applied already
    assert (second.read, second.already_applied) == (0, sum(r.end - r.start for r in earlier))
    wanted, _ = expected_rows(spec, sent[spec.topic])
    assert table_rows(cdc_database, cdc_topics.pg_schema, spec) == wanted
