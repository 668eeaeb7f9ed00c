"""A dirty change event, corrected by an operator and resubmitted through the DLQ replay job (the
validation topic's view), reaches PostgreSQL; the CLI refuses a correction for several entries."""

from __future__ import annotations

import json

import dagster as dg
import psycopg
from psycopg import sql

from pipeline_defs.defs.cdc import table_parts
from pipeline_defs.domains import DLQ_DOMAIN
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs_tests.support.kafka import execute, location, run_all, table_rows, tick
from pipeline_sim.cdc import CdcSource

VIEW = "dlq_cdc_validation"


def refresh_view(resources, instance) -> None:
    (view,) = [a for a in DLQ_DOMAIN.defs.assets or () if isinstance(a, dg.AssetsDefinition) and a.key.path[-1] == VIEW]
    (sensor,) = [s for s in DLQ_DOMAIN.defs.sensors or () if s.name == f"{VIEW}_sensor"]
    for request in tick(sensor, instance, resources).run_requests:
        execute(view, request, resources, instance)


def test_a_corrected_record_replayed_from_the_validation_view_lands(resources, instance, kafka, lake, cdc_topics, cdc_database):
    spec = cdc_topics.tables[0].spec()
    source = CdcSource((spec,), dirty_rate=0)
    inserts = [e for e in (source.next() for _ in range(20)) if e.kind == "insert"][:2]
    documents = [json.loads(e.value) for e in inserts]  # type: ignore[arg-type]
    for document in documents:
        document["after"]["claim_count"]["value"] = "twelve"
    kafka.produce(spec.topic, [OutRecord(json.dumps(d).encode(), e.key) for d, e in zip(documents, inserts)])
    asset, _, sensor = table_parts(spec)
    run_all(sensor, asset, resources, instance)
    refresh_view(resources, instance)
    entries = table_rows(lake, VIEW).sort("source_offset").to_dicts()
    assert len(entries) == 2 and all("claim_count" in e["reason"] and e["status"] == "waiting" for e in entries)
    entry, document = next((e, d) for e in entries for d, i in zip(documents, inserts) if e["payload_key"] == i.key)

    document["after"]["claim_count"]["value"] = 12
    replay = location(resources).resolve_job_def("dlq_replay_job")
    config = {"dlq": "cdc_validation", "ids": [entry["entry_id"]], "dry_run": False, "corrected_value": json.dumps(document)}
    assert replay.execute_in_process(
        run_config={"ops": {"replay_dlq_entries": {"config": {**config, "reason": "claim_count fixed"}}}},
        resources=resources,
        instance=instance,
    ).success
    run_all(sensor, asset, resources, instance)
    query = sql.SQL("SELECT claim_count FROM {}.{}").format(sql.Identifier(cdc_topics.pg_schema), sql.Identifier(spec.pg_table))
    with psycopg.connect(cdc_database) as conn:
        assert conn.execute(query).fetchall() == [(12,)]

    several = {**config, "ids": [], "statuses": ["waiting", "replayed"], "reason": "x"}  # the other entry and this one
    refused = replay.execute_in_process(
        run_config={"ops": {"replay_dlq_entries": {"config": several}}},
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not refused.success  # a correction is for one entry: the filters must select exactly it
    assert sorted(e["status"] for e in table_rows(lake, VIEW).to_dicts()) == ["replayed", "waiting"]
