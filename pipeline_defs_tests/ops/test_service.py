"""The ops service against the real test stack and a test Dagster instance: lag per topic and
partition after producing and committing, readiness per component (one of them down), and
/metrics parsed back with every figure traced to what the test put there."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from deltalake.exceptions import CommitFailedError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline_defs.domains import DLQ_VIEWS
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.dlq.views import VIEW_SCHEMA, WAITING
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import KafkaConnection, StorageSettings
from pipeline_defs.ops import names
from pipeline_defs.ops.collector import OpsCollector, Ttls
from pipeline_defs.ops.health import HealthChecker, dagster_probe, http_probe, kafka_probe, storage_probe
from pipeline_defs.ops.kafka_lag import LagReader
from pipeline_defs.ops.server import ops_app, serve
from pipeline_defs.ops.targets import Cluster, Targets
from pipeline_defs_tests.support.stack import AZURITE_ACCOUNT, AZURITE_KEY, ROOT

PARTITIONS = 3


@pytest.fixture
def ops_topics(kafka: KafkaResource) -> Iterator[list[str]]:
    prefix = f"test.ops.{uuid.uuid4().hex[:8]}"
    created = [f"{prefix}.events", f"{prefix}.events.retry.5m", f"{prefix}.events.dlq"]
    kafka.create_topics(created, PARTITIONS)
    yield created
    kafka.admin().delete_topics(created, operation_timeout=30)


def _produce(kafka: KafkaResource, topic: str, per_partition: dict[int, int]) -> None:
    producer = kafka.producer()
    for partition, count in per_partition.items():
        for i in range(count):
            producer.produce(topic, value=f"{i}".encode(), partition=partition)
    assert producer.flush(30) == 0


@pytest.fixture
def lag_setup(kafka: KafkaResource, ops_topics: list[str]) -> tuple[Cluster, str, str]:
    """Records on every partition of two topics; a group of the pipeline's prefix committed
    some; a feed's group that never committed."""
    events, retry, _ = ops_topics
    prefix = f"ops-test-{uuid.uuid4().hex[:8]}."
    group, feed_group = f"{prefix}xact_events", f"{prefix}xact_attachments"
    _produce(kafka, events, {0: 5, 1: 3, 2: 0})
    _produce(kafka, retry, {0: 2, 1: 0, 2: 4})
    kafka.commit_offsets(group, {(events, 0): 2, (events, 1): 3, (retry, 2): 1})
    return Cluster("kafka", kafka, ops_topics, {(feed_group, retry)}, delayed={retry}), prefix, group


def test_lag_per_group_topic_and_partition(test_stack, lag_setup: tuple[Cluster, str, str], ops_topics) -> None:
    cluster, prefix, group = lag_setup
    events, retry, dlq = ops_topics
    reader = LagReader(cluster, prefix, groups_ttl_s=0)
    snapshot = reader.read()
    mine = {key: n for key, n in snapshot.lag.items() if key[0] == group}
    assert mine == {(group, events, 0): 3, (group, events, 1): 0, (group, retry, 2): 3}
    feed = {key: n for key, n in snapshot.lag.items() if key[0] != group}
    assert feed == {
        (f"{prefix}xact_attachments", retry, 0): 2,
        (f"{prefix}xact_attachments", retry, 1): 0,
        (f"{prefix}xact_attachments", retry, 2): 4,
    }
    assert snapshot.end_offsets[(dlq, 0)] == 0 and snapshot.end_offsets[(events, 0)] == 5
    # a group deleted from the broker: no longer reported, and its offsets consumer is closed
    cluster.kafka.admin().delete_consumer_groups([group], request_timeout=30)[group].result(timeout=30)
    assert not any(key[0] == group for key in reader.read().lag)
    assert group not in reader._consumers
    reader.close()


def _api_double() -> tuple[Any, str]:
    """Anything answering HTTP below 500 counts as the API being there."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"no token"]

    server = serve(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/v1"


def azurite_lake(test_stack: Any) -> DeltaLakeResource:
    """Delta tables in the test stack's ``lake`` container (deploy/stack.sh creates it)."""
    storage = StorageSettings(
        lake_root=f"az://lake/ops-{uuid.uuid4().hex[:8]}",
        azure_account_name=AZURITE_ACCOUNT,
        azure_endpoint=test_stack.azurite_endpoint,
    )
    return DeltaLakeResource(storage=storage, azure_account_key=AZURITE_KEY)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ready_reports_each_component_and_the_one_that_is_down(test_stack, instance, tmp_path: Path) -> None:
    api, api_url = _api_double()
    dead_kafka = KafkaResource(connection=KafkaConnection(bootstrap_servers="127.0.0.1:1", request_timeout_s=1))
    lake = azurite_lake(test_stack)
    checker = HealthChecker(
        {
            "kafka": kafka_probe(dead_kafka, 1.0),
            "storage": storage_probe(lake, "dlq_xact_events", 5.0),
            "dagster": dagster_probe(instance),
            "claimx_api": http_probe(api_url, 5.0),
        },
        timeout_s=10.0,
    )
    server = serve(ops_app(CollectorRegistry(), checker), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert _get(f"{base}/health/live")[0] == 200
        status, body = _get(f"{base}/health/ready")
        components = json.loads(body)["components"]
        assert status == 503
        assert set(components) == {"kafka", "storage", "dagster", "claimx_api"}
        assert components["kafka"]["up"] is False and components["kafka"]["error"]
        for name in ("storage", "dagster", "claimx_api"):
            assert components[name]["up"] is True, components[name]
            assert components[name]["error"] is None
        assert all(c["latency_s"] >= 0 for c in components.values())
    finally:
        server.shutdown()
        api.shutdown()
        checker.close()


def _dlq_rows(lake: DeltaLakeResource, table: str, first_seen: list[tuple[datetime, str]]) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "entry_id": f"e{i}",
            "first_seen": seen,
            "last_seen": seen,
            "status": status,
            "error_category": "invalid",
            "kafka_topic": "t",
            "kafka_partition": 0,
            "kafka_offset": i,
            "ingested_at": now,
            "ingestion_date": now.date(),
            "dagster_run_id": "r",
        }
        for i, (seen, status) in enumerate(first_seen)
    ]
    write_deltalake(lake.table_uri(table), pa.Table.from_pylist(rows, schema=VIEW_SCHEMA), mode="append")


@dg.asset(name="ops_failing_writer")
def _failing_writer() -> None:
    raise CommitFailedError("a concurrent writer won")


QUEUED_JOBS = """
import dagster as dg

@dg.op
def noop() -> None:
    pass

@dg.job
def xact_events_job() -> None:
    noop()

defs = dg.Definitions(jobs=[xact_events_job])
"""


@pytest.fixture
def queuing_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """An instance with a run queue and no daemon, holding one queued run of ``xact_events_job``
    submitted through ``dagster job launch`` (a queued run needs the origin of a real code
    location, which only a workspace gives)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator\ntelemetry:\n  enabled: false\n"
    )
    (tmp_path / "queued_jobs.py").write_text(QUEUED_JOBS)
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "dagster"),
            "job",
            "launch",
            "-f",
            str(tmp_path / "queued_jobs.py"),
            "-j",
            "xact_events_job",
        ],
        cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def _scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    status, body = _get(url)
    assert status == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _fail_run(instance: dg.DagsterInstance, job: str) -> None:
    instance.report_run_failed(instance.add_run(dg.DagsterRun(job_name=job, status=dg.DagsterRunStatus.STARTED)))


def test_metrics_parse_and_trace_to_their_sources(test_stack, queuing_instance, lag_setup, ops_topics, tmp_path: Path) -> None:
    """History from before the service started sets the gauges, never the counters (which
    start at zero, every category of an asset included); what happens after is counted."""
    instance = queuing_instance
    cluster, prefix, group = lag_setup
    events = ops_topics[0]
    lake = DeltaLakeResource(storage=StorageSettings(lake_root=str(tmp_path / "tables")))
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    _dlq_rows(
        lake, "dlq_xact_events", [(hour_ago, WAITING), (datetime.now(UTC), WAITING), (hour_ago - timedelta(days=1), "resolved")]
    )
    (queued,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
    instance.add_run(
        dg.DagsterRun(job_name="claimx_events_job", status=dg.DagsterRunStatus.QUEUED, remote_job_origin=queued.remote_job_origin)
    )
    history: dict[str, Any] = {
        "rows_written": 1000,
        "rejected_by_category": dg.MetadataValue.json({"malformed": 70}),
        "latency_p95_s": 9.0,
    }
    instance.report_runless_asset_event(dg.AssetMaterialization("xact_events", metadata=history))
    _fail_run(instance, "xact_events_job")
    targets = Targets(
        clusters=[cluster],
        group_prefix=prefix,
        lake=lake,
        dlq_views=[DLQ_VIEWS["xact_events"], DLQ_VIEWS["xact_downloads"]],
        assets=["xact_events", "xact_attachments", "cdc_claims__policies", "claimx_events"],
        jobs=["xact_events_job", "claimx_events_job", "claimx_attachments_job"],
    )
    checker = HealthChecker({"kafka": kafka_probe(cluster.kafka, 5.0), "dagster": dagster_probe(instance)}, timeout_s=10.0)
    registry = CollectorRegistry(auto_describe=False)
    collector = OpsCollector(targets, instance, checker, Ttls())
    registry.register(collector)
    server = serve(ops_app(registry, checker), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        first = _scrape(url)
        for _ in range(2):
            _fail_run(instance, "xact_events_job")
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                "xact_events",
                metadata={
                    "rows_written": 40,
                    "rejected_by_category": dg.MetadataValue.json({"malformed": 3}),
                    "latency_p95_s": 1.25,
                },
            )
        )
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                "xact_attachments",
                metadata={
                    "files_stored": 5,
                    "failed_transient": 2,
                    "circuit_transitions": dg.MetadataValue.json(["h.test: closed -> open"]),
                },
            )
        )
        instance.report_runless_asset_event(
            dg.AssetMaterialization("cdc_claims__policies", metadata={"events_read": 3, "inserted": 3, "replication_lag_s": 2.5})
        )
        assert not dg.materialize([_failing_writer], instance=instance, raise_on_error=False).success
        materialized_at = instance.get_latest_materialization_event(dg.AssetKey("xact_events"))
        assert materialized_at is not None
        before = time.time()
        samples = _scrape(url)
        after = time.time()
    finally:
        server.shutdown()
        collector.close()

    def value(name: str, **labels: str) -> float:
        return samples[name][tuple(sorted(labels.items()))]

    def first_value(name: str, **labels: str) -> float:
        return first[name][tuple(sorted(labels.items()))]

    assert first_value(names.ITEMS_TOTAL, asset="xact_events", kind="events", outcome="ok", category="") == 0
    assert first_value(names.ITEMS_TOTAL, asset="xact_events", kind="events", outcome="failed", category="malformed") == 0
    assert first_value(names.RUNS_FAILED_TOTAL, job="xact_events_job") == 0
    assert first_value(names.EVENT_LATENCY_P95_SECONDS, asset="xact_events") == 9.0
    assert set(samples) >= set(names.CONTRACT)
    assert value(names.KAFKA_CONSUMER_LAG, consumer_group=group, topic=events, partition="0") == 3
    # the group's lag on its plain topic (3 + 0); the retry topics' records are not due yet
    assert value(names.ASSET_PENDING_MESSAGES, asset="xact_events") == 3
    assert value(names.ASSET_PENDING_MESSAGES, asset="xact_attachments") == 0
    assert value(names.DLQ_DEPTH, dlq="xact_events") == 2 and value(names.DLQ_DEPTH, dlq="xact_downloads") == 0
    assert value(names.DLQ_OLDEST_ENTRY_AGE_SECONDS, dlq="xact_events") >= 3600
    assert value(names.RUNS_FAILED_TOTAL, job="xact_events_job") == 2
    assert value(names.RUNS_FAILED_TOTAL, job="claimx_attachments_job") == 0
    assert value(names.RUNS_QUEUED, job="xact_events_job") == 1 and value(names.RUNS_QUEUED, job="claimx_events_job") == 1
    assert value(names.ITEMS_TOTAL, asset="xact_events", kind="events", outcome="ok", category="") == 40
    assert value(names.ITEMS_TOTAL, asset="xact_events", kind="events", outcome="failed", category="malformed") == 3
    assert value(names.ITEMS_TOTAL, asset="xact_attachments", kind="files", outcome="failed", category="transient") == 2
    assert value(names.ITEMS_TOTAL, asset="xact_attachments", kind="files", outcome="failed", category="auth") == 0
    since = value(names.ASSET_SECONDS_SINCE_SUCCESS, asset="xact_events")
    assert before - materialized_at.timestamp <= since <= after - materialized_at.timestamp
    assert ("asset", "claimx_events") not in {label for key in samples[names.ASSET_SECONDS_SINCE_SUCCESS] for label in key}
    assert value(names.EVENT_LATENCY_P95_SECONDS, asset="xact_events") == 1.25
    assert value(names.CDC_REPLICATION_LAG_SECONDS, table="claims__policies") == 2.5
    assert value(names.CIRCUIT_BREAKER_OPEN, target="h.test") == 1
    assert value(names.WRITE_FAILURES_TOTAL, sink="delta") == 1 and value(names.WRITE_FAILURES_TOTAL, sink="postgres") == 0
    assert value(names.HEALTH_UP, component="kafka") == 1 and value(names.HEALTH_UP, component="dagster") == 1
    assert value(names.HEALTH_LATENCY_SECONDS, component="kafka") >= 0
    assert value(names.SCRAPE_DURATION_SECONDS) > 0
    assert all(v == 1 for v in samples[names.SOURCE_UP].values())


def test_a_part_that_cannot_be_read_leaves_the_others(test_stack, instance, tmp_path: Path) -> None:
    dead_kafka = KafkaResource(connection=KafkaConnection(bootstrap_servers="127.0.0.1:1", request_timeout_s=1))
    targets = Targets(
        clusters=[Cluster("kafka", dead_kafka, ["events.raw"])],
        group_prefix="pipeline.",
        lake=DeltaLakeResource(storage=StorageSettings(lake_root=str(tmp_path / "tables"))),
        dlq_views=[DLQ_VIEWS["xact_events"]],
        assets=["xact_events"],
        jobs=["xact_events_job"],
    )
    checker = HealthChecker({"kafka": kafka_probe(dead_kafka, 1.0), "dagster": dagster_probe(instance)}, timeout_s=10.0)
    registry = CollectorRegistry(auto_describe=False)
    collector = OpsCollector(targets, instance, checker)
    registry.register(collector)
    try:
        generate_latest(registry)  # the service has started: what follows is counted
        instance.report_runless_asset_event(dg.AssetMaterialization("xact_events", metadata={"rows_written": 1}))
        text = generate_latest(registry).decode()
    finally:
        collector.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert samples[(names.SOURCE_UP, (("source", "kafka"),))] == 0
    assert samples[(names.SOURCE_UP, (("source", "event_log"),))] == 1
    assert samples[(names.HEALTH_UP, (("component", "kafka"),))] == 0
    assert samples[(names.ITEMS_TOTAL, (("asset", "xact_events"), ("category", ""), ("kind", "events"), ("outcome", "ok")))] == 1
    assert not any(name == names.KAFKA_CONSUMER_LAG for name, _ in samples)
