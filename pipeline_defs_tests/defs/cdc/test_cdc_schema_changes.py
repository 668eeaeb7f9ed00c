"""Schema evolution through the table assets, on the real broker and PostgreSQL: a new column is
added once and filled; a declared column whose values changed type upstream sends its records to
the validation topic and fails the blocking check naming the column, while another table goes on."""

from __future__ import annotations

import json

import dagster as dg
import psycopg
from psycopg import sql

from pipeline_defs.defs.cdc import table_parts
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs_tests.support.kafka import headers_of, metadata_of, run_all, tick
from pipeline_sim.cdc import EVOLVED_COLUMN, CdcSource

EVENTS = 300
CHANGED = "claim_count"  # declared int; upstream now writes text


def produce(kafka, spec, source: CdcSource, retype: bool = False) -> int:
    records = []
    for _ in range(EVENTS):
        envelope = source.next()
        value = envelope.value
        if retype and value is not None and not envelope.kind.startswith("dirty"):
            document = json.loads(value)
            if document["op"] in ("c", "u"):
                document["after"][CHANGED] = {"value": "about a dozen", "deletion_ts": None, "set": True}
                value = json.dumps(document).encode()
        records.append(OutRecord(value=value, key=envelope.key))  # type: ignore[arg-type]
    return kafka.produce(spec.topic, records)


def test_a_new_column_is_added_once_and_filled(resources, instance, kafka, cdc_topics, cdc_database) -> None:
    spec = cdc_topics.tables[0].spec()
    produce(kafka, spec, CdcSource((spec,), dirty_rate=0, evolve_after=EVENTS // 3))
    asset, _, sensor = table_parts(spec)
    results = run_all(sensor, asset, resources, instance)
    name, _ = EVOLVED_COLUMN
    assert [name] == [c for r in results for c in metadata_of(r)["columns_added"].split(", ") if c]
    schema, table = sql.Identifier(cdc_topics.pg_schema), sql.Identifier(spec.pg_table)
    with psycopg.connect(cdc_database) as conn:
        changes = conn.execute(
            sql.SQL('SELECT column_name, pg_type, change FROM {}."cdc_schema_changes" WHERE table_name = %s').format(schema),
            [spec.pg_table],
        ).fetchall()
        filled = conn.execute(sql.SQL("SELECT count({}) FROM {}.{}").format(sql.Identifier(name), schema, table)).fetchone()
    assert changes == [(name, "boolean", "add_column")]
    assert filled is not None and filled[0] > 0


def test_a_changed_column_type_fails_the_blocking_check_and_other_tables_go_on(
    resources, instance, kafka, cdc_topics, cdc_database, consume_all
) -> None:
    policies, notes = (t.spec() for t in cdc_topics.tables)
    produce(kafka, policies, CdcSource((policies,), dirty_rate=0), retype=True)
    produce(kafka, notes, CdcSource((notes,), dirty_rate=0))

    asset, _, sensor = table_parts(policies)
    requests = tick(sensor, instance, resources).run_requests
    assert requests, "nothing planned"
    result = dg.materialize([asset], tags=requests[0].tags, resources=resources, instance=instance, raise_on_error=False)
    assert not result.success  # the blocking check stops the run: nothing downstream sees the broken table
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "declared_schema_holds"]
    assert not check.passed and CHANGED in str(check.metadata["broken_columns"].value)
    letters = consume_all(cdc_topics.validation_topic)
    assert letters and all(CHANGED in headers_of(m)["__dlq.errors.reason"] for m in letters)

    notes_asset, _, notes_sensor = table_parts(notes)
    assert run_all(notes_sensor, notes_asset, resources, instance)  # the other table is not stopped
