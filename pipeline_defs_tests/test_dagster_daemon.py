"""The deployed path end to end: the Dagster daemon ticks the sensor, the run queue launches
runs in their own processes against a PostgreSQL-backed instance (deploy/dagster/dagster.yaml),
and the events land in Delta. This is what the README's run command does, minus the webserver."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.settings import StorageSettings
from pipeline_defs_tests.support.fixtures import TEST_RETRY_DELAYS_S
from pipeline_defs_tests.support.kafka import produce_events, produce_raw, sample_events, table_rows
from pipeline_defs_tests.support.stack import ROOT
from pipeline_defs_tests.support.topics import topic_env
from pipeline_sim.events import MALFORMED_MESSAGES


@pytest.fixture
def dagster_home(tmp_path: Path, test_stack, monkeypatch) -> Path:
    database = f"dagster_{uuid.uuid4().hex[:8]}"
    connection = psycopg2.connect(host="127.0.0.1", port=test_stack.pg_port, user="postgres", dbname="postgres")
    connection.autocommit = True
    connection.cursor().execute(f"CREATE DATABASE {database}")
    connection.close()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", test_stack.dagster_pg_url(database))
    return home


# Generous: a busy 2-core machine boots each run worker in seconds; the bound only keeps a broken
# pipeline from hanging the suite, and the message says what was still waiting.
WAIT_S = 600


def wait_for(condition, what: str, instance: dg.DagsterInstance) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            runs = [(run.run_id[:8], run.job_name, run.status.value) for run in instance.get_runs(limit=20)]
            pytest.fail(f"waited {WAIT_S}s for {what}; latest runs: {runs}")
        time.sleep(2)


@pytest.mark.timeout(1800)  # a daemon, its runs and the stack share a busy machine
def test_daemon_runs_the_sensor_and_the_runs_fill_xact_events(dagster_home, tmp_path, test_stack, kafka, topics):
    lake_root = tmp_path / "tables"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "PIPELINE_SOURCE_KAFKA__BOOTSTRAP_SERVERS": test_stack.bootstrap_servers,
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": test_stack.bootstrap_servers,
        **topic_env(topics),
        "PIPELINE_INGEST__RETRY_DELAYS_S": json.dumps(TEST_RETRY_DELAYS_S),
        "PIPELINE_STORAGE__LAKE_ROOT": str(lake_root),
        "PIPELINE_INGEST__CONSUMER_GROUP_PREFIX": f"daemon-{uuid.uuid4().hex[:6]}",
        "PIPELINE_INGEST__MAX_EVENTS_PER_RUN": "300",
        "PIPELINE_INGEST__STREAM__ENABLED": "false",  # the batch path: sensor-planned runs
    }
    produce_events(kafka, topics.xact.events, sample_events(500))
    produce_raw(kafka, topics.xact.events, MALFORMED_MESSAGES)
    daemon = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    lake = DeltaLakeResource(storage=StorageSettings(lake_root=str(lake_root)))
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    in_flight = dg.RunsFilter(
        statuses=[
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED,
        ]
    )
    try:
        wait_for(lambda: table_rows(lake, "xact_events").height >= 500, "the first 500 events in xact_events", instance)
        produce_events(kafka, topics.xact.events, sample_events(100, seed=11))
        wait_for(lambda: table_rows(lake, "xact_events").height >= 600, "the late 100 events in xact_events", instance)
        # Every run the daemon launched ends before the daemon is stopped: stopping it earlier
        # would kill runs in flight and fail them for a reason that is not theirs.
        wait_for(lambda: not instance.get_runs(filters=in_flight), "the daemon's runs to finish", instance)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(30)

    rows = table_rows(lake, "xact_events")
    assert rows.height == 600 and rows["trace_id"].n_unique() == 600
    runs = instance.get_runs(filters=dg.RunsFilter(job_name="xact_events_job"))
    assert len(runs) >= 3  # 506 offsets in runs of at most 300, then the late 100
    failures = {
        run.run_id: [e.message for e in instance.all_logs(run.run_id)][-3:]
        for run in runs
        if run.status != dg.DagsterRunStatus.SUCCESS
    }
    assert not failures
    assert all(run.tags["kafka/topic"] == topics.xact.events for run in runs)


@pytest.mark.timeout(1800)  # a daemon, its runs and the stack share a busy machine
def test_with_streaming_on_one_run_per_asset_consumes_and_a_terminate_stops_it_cleanly(
    dagster_home, tmp_path, test_stack, kafka, topics
):
    lake_root = tmp_path / "tables"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "PIPELINE_SOURCE_KAFKA__BOOTSTRAP_SERVERS": test_stack.bootstrap_servers,
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": test_stack.bootstrap_servers,
        **topic_env(topics),
        "PIPELINE_INGEST__RETRY_DELAYS_S": json.dumps(TEST_RETRY_DELAYS_S),
        "PIPELINE_STORAGE__LAKE_ROOT": str(lake_root),
        "PIPELINE_INGEST__CONSUMER_GROUP_PREFIX": f"daemon-{uuid.uuid4().hex[:6]}",
        "PIPELINE_INGEST__STREAM__ENABLED": "true",
        "PIPELINE_INGEST__STREAM__REPORT_INTERVAL_S": "5",
    }
    produce_events(kafka, topics.xact.events, sample_events(300))
    produce_raw(kafka, topics.xact.events, MALFORMED_MESSAGES)
    daemon = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    lake = DeltaLakeResource(storage=StorageSettings(lake_root=str(lake_root)))
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    streaming = dg.RunsFilter(job_name="xact_events_stream_job", statuses=[dg.DagsterRunStatus.STARTED])

    def stream_runs() -> Sequence[dg.DagsterRun]:
        return instance.get_runs(filters=streaming)

    try:
        wait_for(lambda: table_rows(lake, "xact_events").height >= 300, "the first 300 events in xact_events", instance)
        wait_for(lambda: len(stream_runs()) == 1, "the xact_events streaming run", instance)
        first = stream_runs()[0]
        produce_events(kafka, topics.xact.events, sample_events(100, seed=11))
        wait_for(lambda: table_rows(lake, "xact_events").height >= 400, "100 more events, by the stream", instance)

        assert instance.run_launcher.terminate(first.run_id)
        wait_for(lambda: _status(instance, first.run_id) == dg.DagsterRunStatus.CANCELED, "the terminated run to end", instance)
        clean_stop = "stop requested: the last micro-batch is committed"
        wait_for(lambda: any(clean_stop in e.message for e in instance.all_logs(first.run_id)), "the clean stop", instance)
        # The sensor keeps a stream alive: the next generation takes over where the first stopped.
        wait_for(lambda: any(r.run_id != first.run_id for r in stream_runs()), "the next streaming run", instance)
        produce_events(kafka, topics.xact.events, sample_events(100, seed=12))
        wait_for(lambda: table_rows(lake, "xact_events").height >= 500, "100 more events, by the next stream", instance)
    finally:
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            instance.run_launcher.terminate(run.run_id)  # streaming runs outlive the daemon otherwise
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(30)

    rows = table_rows(lake, "xact_events")
    assert rows.height == 500 and rows["trace_id"].n_unique() == 500
    keys = {
        r.tags.get("dagster/run_key", "") for r in instance.get_runs(filters=dg.RunsFilter(job_name="xact_events_stream_job"))
    }
    assert {"xact_events:stream:1", "xact_events:stream:2"} <= keys
    materialized = instance.fetch_materializations(dg.AssetKey("xact_events"), limit=100).records
    assert any(record.run_id == first.run_id for record in materialized)


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus | None:
    run = instance.get_run_by_id(run_id)
    return run.status if run is not None else None
