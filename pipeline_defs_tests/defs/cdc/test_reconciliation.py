"""``reconciled_with_kafka`` on the real broker and PostgreSQL: after replication every sampled key
matches; a row changed or deleted behind the pipeline's back is a mismatch naming the key and
columns (never a value); events not yet applied are not compared; a key whose newest writetime
lies before the scanned tail is inconclusive, not a mismatch; soft delete mode too."""

from __future__ import annotations

import json
import uuid
from typing import Any

import dagster as dg
import psycopg
from psycopg import sql

from pipeline_defs.defs.cdc import reconciliation_definitions, table_definitions, table_parts
from pipeline_defs.defs.cdc.reconciliation import CHECK_NAME, build_reconciliation_check, reconciliation_key
from pipeline_defs.defs.cdc.settings import CdcConfigResource
from pipeline_defs.lib.cdc.model import TableSpec
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_sim.cdc import CdcSource

WT = 1_720_000_000_000_000


def envelope(spec: TableSpec, policy_id: str, writetime: int, op: str = "c", **cells: Any) -> OutRecord:
    """A Debezium envelope of ``claims.policies`` setting ``cells`` (a delete when ``op`` is "d")."""
    after: dict[str, Any] = {"policy_id": {"value": policy_id, "deletion_ts": writetime if op == "d" else None, "set": True}}
    after.update({name: {"value": value, "deletion_ts": None, "set": True} for name, value in cells.items()})
    source = {"keyspace": spec.keyspace, "table": spec.table, "ts_ms": writetime // 1000, "ts_us": writetime, "file": "CommitLog-7-1.log", "pos": 4}  # fmt: skip
    value = {"op": op, "ts_ms": writetime // 1000 + 5, "source": source, "after": after}
    return OutRecord(value=json.dumps(value).encode(), key=json.dumps({"policy_id": policy_id}).encode())


def policy(spec: TableSpec, policy_id: str, writetime: int, name: str) -> OutRecord:
    cells: dict[str, Any] = {
        "holder_name": name,
        "claim_count": 3,
        "loss_ratio": "NaN",
        "premium": 12.5,
        "tags": ["a", "b"],
        "limits": {"x": 1.5},
    }
    return envelope(spec, policy_id, writetime, **cells)


def replicate(spec: TableSpec, resources: dict[str, object], instance: dg.DagsterInstance) -> None:
    asset, _, _ = table_parts(spec)
    assert dg.materialize([asset], resources=resources, instance=instance).success  # from the applied offsets to the log end


def reconciliation(spec: TableSpec, resources: dict[str, object], instance: dg.DagsterInstance) -> tuple[bool, dict[str, Any]]:
    """The check run on its own, as the UI's Execute runs it: passed, and its metadata's values."""
    asset, _, _ = table_parts(spec)
    check = build_reconciliation_check(spec)
    result = dg.materialize([asset, check], selection=dg.AssetSelection.checks(check), resources=resources, instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK_NAME and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert not result.get_asset_materialization_events(), "the check must not materialize the table"
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}


def with_settings(resources: dict[str, object], **changes: Any) -> dict[str, object]:
    settings = resources["cdc"].settings  # type: ignore[attr-defined]
    return {**resources, "cdc": CdcConfigResource(settings=settings.model_copy(update=changes))}


def execute(conninfo: str, statement: sql.Composed, *params: Any) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(statement, params)


def handmade(spec: TableSpec, kafka: KafkaResource) -> list[str]:
    """Five policies, one updated and one deleted since: what every test below starts from."""
    ids = [str(uuid.uuid4()) for _ in range(5)]
    records = [policy(spec, pid, WT + i, f"holder {i}") for i, pid in enumerate(ids)]
    records += [envelope(spec, ids[0], WT + 100, "u", holder_name="renamed"), envelope(spec, ids[1], WT + 100, "d")]
    kafka.produce(spec.topic, records)
    return ids


def test_after_replication_every_sampled_key_matches(resources, instance, kafka, cdc_topics) -> None:
    specs = tuple(table.spec() for table in cdc_topics.tables)
    source = CdcSource(specs, dirty_rate=0.03)
    sent: dict[str, list[OutRecord]] = {spec.topic: [] for spec in specs}
    for _ in range(800):
        e = source.next()
        sent[e.topic].append(OutRecord(value=e.value, key=e.key))  # type: ignore[arg-type]
    for spec in specs:
        kafka.produce(spec.topic, sent[spec.topic])
        replicate(spec, resources, instance)
        passed, metadata = reconciliation(spec, resources, instance)
        assert passed and metadata["mismatched"] == 0, metadata
        assert metadata["scanned"] == len(sent[spec.topic]) and metadata["checked"] == metadata["keys_in_tail"] > 0
        assert metadata["matched"] + metadata["inconclusive"] == metadata["checked"]
        if len(spec.primary_key) == 1:  # no partition deletes: every key settles
            assert metadata["inconclusive"] == 0, metadata
        assert metadata["matched"] > metadata["checked"] / 2, metadata  # partition deletes make claim_notes' keys inconclusive
    passed, metadata = reconciliation(specs[0], with_settings(resources, reconcile_sample_keys=10), instance)
    assert passed and metadata["checked"] == 10 < metadata["keys_in_tail"]


def test_a_row_changed_behind_the_pipelines_back_is_a_mismatch_naming_the_column(
    resources, instance, kafka, cdc_topics, cdc_database
) -> None:
    spec = cdc_topics.tables[0].spec()
    ids = handmade(spec, kafka)
    replicate(spec, resources, instance)
    passed, metadata = reconciliation(spec, resources, instance)
    assert passed and (metadata["checked"], metadata["matched"]) == (5, 5), metadata
    table = sql.SQL("{}.{}").format(sql.Identifier(cdc_topics.pg_schema), sql.Identifier(spec.pg_table))
    execute(
        cdc_database, sql.SQL("UPDATE {} SET holder_name = 'tampered', tags = NULL WHERE policy_id = %s").format(table), ids[2]
    )
    passed, metadata = reconciliation(spec, resources, instance)
    assert not passed and metadata["mismatched"] == 1
    samples = metadata["mismatch_samples"]
    assert "values_differ" in samples and ids[2] in samples and "holder_name, tags" in samples
    assert "tampered" not in samples and "holder 2" not in samples  # keys, columns and writetimes only


def test_a_row_deleted_behind_the_pipelines_back_is_a_mismatch(resources, instance, kafka, cdc_topics, cdc_database) -> None:
    spec = cdc_topics.tables[0].spec()
    ids = handmade(spec, kafka)
    replicate(spec, resources, instance)
    table = sql.SQL("{}.{}").format(sql.Identifier(cdc_topics.pg_schema), sql.Identifier(spec.pg_table))
    execute(cdc_database, sql.SQL("DELETE FROM {} WHERE policy_id = %s").format(table), ids[0])
    passed, metadata = reconciliation(spec, resources, instance)
    assert (
        not passed
        and metadata["mismatched"] == 1
        and f'row_missing: key {{"policy_id": "{ids[0]}"}}' in metadata["mismatch_samples"]
    )


def test_events_not_yet_applied_are_not_compared(resources, instance, kafka, cdc_topics) -> None:
    spec = cdc_topics.tables[0].spec()
    ids = handmade(spec, kafka)
    replicate(spec, resources, instance)
    # newer than the rows, but beyond _cdc_offsets: compared, they would be lost updates and missing rows
    kafka.produce(
        spec.topic,
        [envelope(spec, ids[2], WT + 500, "u", holder_name="pending"), policy(spec, str(uuid.uuid4()), WT + 500, "new")],
    )
    passed, metadata = reconciliation(spec, resources, instance)
    assert passed and (metadata["scanned"], metadata["checked"], metadata["matched"]) == (7, 5, 5), metadata
    replicate(spec, resources, instance)
    passed, metadata = reconciliation(spec, resources, instance)
    assert passed and (metadata["scanned"], metadata["checked"], metadata["matched"]) == (9, 6, 6), metadata


def test_a_newest_writetime_before_the_scanned_tail_is_inconclusive(resources, instance, kafka, cdc_topics) -> None:
    spec = cdc_topics.tables[0].spec()
    handmade(spec, kafka)
    late = str(uuid.uuid4())  # its newest write first, an older one delivered after it: the last record of its partition
    kafka.produce(spec.topic, [policy(spec, late, WT + 900, "newest"), envelope(spec, late, WT + 800, "u", holder_name="older")])
    replicate(spec, resources, instance)
    passed, metadata = reconciliation(spec, with_settings(resources, reconcile_scan_events=1), instance)
    assert passed and metadata["mismatched"] == 0 and metadata["scanned"] <= 3, metadata
    assert "row_newer_than_tail (1)" in metadata["inconclusive_reasons"], metadata
    passed, metadata = reconciliation(spec, resources, instance)  # the whole log: the newest write is seen
    assert passed and metadata["inconclusive"] == 0 and metadata["matched"] == 6, metadata


def test_soft_deleted_rows_reconcile_and_an_undeleted_one_does_not(resources, instance, kafka, cdc_topics, cdc_database) -> None:
    spec = cdc_topics.tables[0].spec()
    soft = with_settings(resources, delete_mode="soft")
    ids = handmade(spec, kafka)
    replicate(spec, soft, instance)
    passed, metadata = reconciliation(spec, soft, instance)
    assert passed and metadata["matched"] == 5, metadata
    table = sql.SQL("{}.{}").format(sql.Identifier(cdc_topics.pg_schema), sql.Identifier(spec.pg_table))
    execute(cdc_database, sql.SQL("UPDATE {} SET _cdc_deleted = false WHERE policy_id = %s").format(table), ids[1])
    passed, metadata = reconciliation(spec, soft, instance)
    assert not passed and "delete_not_applied" in metadata["mismatch_samples"] and ids[1] in metadata["mismatch_samples"]


def test_the_check_stays_out_of_the_tables_micro_batch_runs(cdc_specs) -> None:
    spec = cdc_specs[0]
    placeholders = {key: dg.ResourceDefinition.none_resource() for key in ("kafka", "cdc", "cdc_postgres", "files", "ingest")}
    defs = dg.Definitions.merge(
        table_definitions(spec), reconciliation_definitions([spec]), dg.Definitions(resources=placeholders)
    )
    job = defs.resolve_job_def(f"cdc_{spec.pg_table}_job")
    assert reconciliation_key(spec) in defs.resolve_asset_graph().asset_check_keys
    assert reconciliation_key(spec) not in job.asset_layer.asset_graph.asset_check_keys
    assert {k.name for k in job.asset_layer.asset_graph.asset_check_keys} >= {"declared_schema_holds"}
    scheduled = defs.resolve_job_def("cdc_reconciliation_job")  # its own hourly job runs it
    assert reconciliation_key(spec) in scheduled.asset_layer.asset_graph.asset_check_keys
    assert defs.resolve_schedule_def("cdc_reconciliation_schedule").job_name == "cdc_reconciliation_job"
