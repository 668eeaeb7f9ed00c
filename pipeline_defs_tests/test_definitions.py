"""The code location loads, and what users see in the UI is there."""

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from pipeline_defs.definitions import defs as build_defs
from pipeline_defs.defs.claimx.api import ClaimXApiResource
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.kafka.resource import KafkaResource

defs = build_defs()


def config_fields(op: Any) -> set[str]:
    """The Launchpad fields of an op's config."""
    return set(op.config_schema.config_type.fields)


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)


def test_ui_facing_assets_checks_sensors_and_jobs_exist():
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("xact_events") in graph.get_all_asset_keys()
    check_names = {key.name for key in graph.asset_check_keys}
    assert {"trace_id_unique", "required_fields_present"} <= check_names
    sensor = defs.resolve_sensor_def("xact_events_kafka_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_job_def("xact_events_job").partitions_def is not None


def test_every_asset_has_owners_description_group_and_kinds():
    for spec in defs.resolve_all_asset_specs():
        assert spec.owners, spec.key
        assert spec.description, spec.key
        assert spec.group_name and spec.group_name != "default", spec.key
        assert spec.kinds, spec.key


def test_resources_cover_every_external_system():
    resources = dict(defs.resources or {})
    assert isinstance(resources["source_kafka"], KafkaResource)
    assert isinstance(resources["kafka"], KafkaResource)
    assert isinstance(resources["lake"], DeltaLakeResource)
    assert isinstance(resources["claimx_api"], ClaimXApiResource)


def test_loading_the_code_location_touches_no_network():
    # With every address unroutable, the import must still be instant: nothing connects at import.
    code = "import pipeline_defs.definitions"
    env = {
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": "192.0.2.1:9092",
        "PIPELINE_SOURCE_KAFKA__BOOTSTRAP_SERVERS": "192.0.2.1:9092",
        "PATH": "/usr/bin:/bin",
    }
    completed = subprocess.run([sys.executable, "-c", code], env=env, timeout=60, capture_output=True)
    assert completed.returncode == 0, completed.stderr.decode()


def test_dlq_views_checks_operations_and_schedule_are_in_the_ui():
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    views = {"dlq_xact_events", "dlq_xact_downloads", "dlq_claimx_events", "dlq_claimx_enrichment", "dlq_claimx_downloads"}
    assert {dg.AssetKey(name) for name in views | {"dlq_audit"}} <= keys
    view_job = defs.resolve_job_def("dlq_xact_downloads_job")
    assert {k.name for k in view_job.asset_layer.asset_graph.asset_check_keys} >= {"growth_rate", "oldest_entry_age"}
    for job_name, field in (("dlq_replay_job", "dry_run"), ("dlq_resolve_job", "reason"), ("dlq_purge_job", "confirm")):
        (op,) = defs.resolve_job_def(job_name).all_node_defs
        assert {field, "dlq", "ids", "error_category", "max_count"} <= config_fields(op)
    schedule = defs.resolve_schedule_def("dlq_health_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_claimx_assets_checks_and_sensors_are_in_the_ui():
    graph = defs.resolve_asset_graph()
    tables = [
        "claimx_projects",
        "claimx_contacts",
        "claimx_media",
        "claimx_tasks",
        "claimx_task_templates",
        "claimx_external_links",
        "claimx_video_collab",
    ]
    expected = {"claimx_events", "claimx_enrichment_log", "claimx_attachments", *tables}
    assert {dg.AssetKey(name) for name in expected} <= graph.get_all_asset_keys()
    checks = {(key.asset_key.path[-1], key.name) for key in graph.asset_check_keys}
    assert {(table, "merge_keys_unique") for table in tables} <= checks
    assert {
        ("claimx_media", "project_exists"),
        ("claimx_tasks", "template_known"),
        ("claimx_events", "event_id_unique"),
    } <= checks
    for name in (
        "claimx_events_kafka_sensor",
        "claimx_enrichment_pending_sensor",
        "claimx_enrichment_retry_sensor",
        "claimx_attachments_pending_sensor",
        "claimx_attachments_retry_sensor",
    ):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_job_def("claimx_entities_job").partitions_def is not None


def test_every_delta_writer_fed_by_kafka_has_a_pool_and_every_kafka_table_a_health_check():
    """One writer per table: overlapping runs of an attachment asset would download each
    other's work. And each Kafka-fed table says whether its consumer keeps up."""
    graph = defs.resolve_asset_graph()
    for key in ("xact_events", "xact_attachments", "claimx_events", "claimx_attachments", "claimx_enrichment_log"):
        node = graph.get(dg.AssetKey(key))
        assert node.pools, key
    health = {key.asset_key.path[-1] for key in graph.asset_check_keys if key.name == "consumer_keeps_up"}
    assert health >= {
        "xact_events",
        "xact_attachments",
        "claimx_events",
        "claimx_enrichment_log",
        "claimx_attachments",
        "dlq_xact_events",
    }
    fresh = {key.asset_key.path[-1] for key in graph.asset_check_keys if key.name == "freshness_check"}
    assert fresh == health  # Dagster's freshness check beside each consumer check, evaluated by its sensor
    for sensor in ("run_failure_alert_sensor", "asset_check_failure_alert_sensor", "freshness_checks_sensor"):
        assert defs.resolve_sensor_def(sensor).default_status == dg.DefaultSensorStatus.RUNNING
    reset = defs.resolve_job_def("kafka_offsets_reset_job")
    (op,) = reset.all_node_defs
    assert {"table", "topic", "partitions", "to", "confirm"} <= config_fields(op)


def test_shared_code_never_imports_a_domain_and_the_product_never_imports_the_simulator():
    root = Path(__file__).resolve().parents[1] / "pipeline_defs"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.module is None:
                continue
            shared = path.is_relative_to(root / "lib")
            if node.module.startswith("pipeline_sim") or (
                shared and node.module.startswith(("pipeline_defs.defs", "pipeline_defs.domains"))
            ):
                offenders.append(f"{path.relative_to(root)} imports {node.module}")
    assert not offenders
