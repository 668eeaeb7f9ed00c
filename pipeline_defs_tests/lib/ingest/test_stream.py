"""Streaming runs on the real broker and real Delta tables: micro-batches under the batch
path's watermark protocol, reports per day, overlap with batch runs, and a clean stop."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import dagster as dg

from pipeline_defs.defs.xact.assets import XACT_EVENT_LOG, xact_events
from pipeline_defs.defs.xact.sensors import xact_events_kafka_sensor, xact_events_stream_job
from pipeline_defs.lib.ingest.stream import StopSignal, Streamer
from pipeline_defs_tests.support.kafka import (
    execute,
    location,
    metadata_of,
    produce_events,
    produce_raw,
    sample_events,
    streaming,
    table_rows,
    tick,
    with_ingest,
)
from pipeline_sim.events import MALFORMED_MESSAGES


def run_stream(resources: dict, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = location(resources).get_job_def(xact_events_stream_job.name)
    return job.execute_in_process(instance=instance, raise_on_error=False)


def test_a_streaming_run_commits_what_arrives_and_reports_each_interval(resources, topics, kafka, lake, instance):
    events = sample_events(300)
    produce_events(kafka, topics.xact.events, events + events[:20])  # the source resends some
    produce_raw(kafka, topics.xact.events, MALFORMED_MESSAGES)
    late = sample_events(100, seed=3)
    threading.Timer(2.0, produce_events, (kafka, topics.xact.events, late)).start()

    result = run_stream(streaming(resources, max_run_s=6), instance)

    assert result.success
    rows = table_rows(lake, "xact_events")
    assert rows.height == 400 and rows["trace_id"].n_unique() == 400
    materializations = result.asset_materializations_for_node("xact_events_stream")
    today = datetime.now(UTC).date().isoformat()
    assert materializations and {m.partition for m in materializations} == {today}
    metadata: list[dict[str, Any]] = [{k: v.value for k, v in m.metadata.items()} for m in materializations]
    assert sum(m["rows_written"] for m in metadata) == 400
    assert sum(m["dead_lettered"] for m in metadata) == len(MALFORMED_MESSAGES)
    assert metadata[-1]["mode"] == "streaming" and metadata[-1]["lag_total"] == 0
    assert all(0 <= m["latency_p50_s"] <= m["latency_p95_s"] <= m["latency_p99_s"] for m in metadata)
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    assert {c.check_name for c in checks} >= {"trace_id_unique", "required_fields_present"}
    group = resources["ingest"].consumer_group("xact_events")
    states = kafka.partition_states(topics.xact.events, 10)
    assert kafka.committed_offsets(group, topics.xact.events, states, 10) == {p: s.high for p, s in states.items()}


def test_streaming_and_batch_runs_overlapping_write_every_event_once(resources, topics, kafka, lake, instance):
    produce_events(kafka, topics.xact.events, sample_events(600))
    batch_resources = with_ingest(resources, max_events_per_run=150)
    planned = tick(xact_events_kafka_sensor, instance, batch_resources).run_requests
    produce_events(kafka, topics.xact.events, sample_events(200, seed=5))
    stream_resources = streaming(resources, max_run_s=60)
    config = stream_resources["ingest"]
    streamer = Streamer(
        topics=[topics.xact.events],
        source=kafka,
        lake=lake,
        group_id=XACT_EVENT_LOG.feed.group_id(config),
        run_id="streaming-run",
        new_sink=lambda: XACT_EVENT_LOG.sink(SimpleNamespace(**stream_resources)),
        ingest=config.ingest,
        log=logging.getLogger(__name__),
    )

    with streamer:  # positioned before the batch runs commit: it will read what they wrote
        early = [execute(xact_events, r, batch_resources, instance) for r in planned[:2]]
        intervals = [streamer.next_interval(StopSignal(), time.monotonic() + 60, lambda: None) for _ in range(3)]
    late = [execute(xact_events, r, batch_resources, instance) for r in planned[2:]]

    assert all(r.success for r in early + late)
    assert sum(i.report.already_committed for i in intervals) == 300  # the two early runs' offsets, dropped
    assert sum(metadata_of(r)["rows_written"] for r in late) == 0  # the stream got there first
    rows = table_rows(lake, "xact_events")
    assert rows.height == 800 and rows["trace_id"].n_unique() == 800
    offsets = rows.select("kafka_partition", "kafka_offset")
    assert offsets.n_unique() == offsets.height  # no offset written twice, by either path
    again = [execute(xact_events, r, batch_resources, instance) for r in planned]
    assert all(r.success for r in again) and table_rows(lake, "xact_events").height == 800


def test_an_interrupt_ends_the_run_after_the_micro_batch_in_hand_is_committed(resources, topics, kafka, lake, instance):
    def trickle_then_interrupt() -> None:
        """Events keep arriving; the signal comes once the stream has committed some (within
        one long reporting interval, so it lands in the middle of the stream's work)."""
        for seed in range(40):
            produce_events(kafka, topics.xact.events, sample_events(25, seed=100 + seed))
            if seed == 20:
                deadline = time.monotonic() + 300
                while table_rows(lake, "xact_events").height == 0 and time.monotonic() < deadline:
                    time.sleep(0.2)
                os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    feeder = threading.Thread(target=trickle_then_interrupt)
    feeder.start()
    result = run_stream(streaming(resources, max_run_s=900, report_interval_s=600), instance)
    feeder.join(120)

    # Interrupted (a terminate from the UI makes that "canceled"; a bare signal, as here, "failed").
    assert not result.success
    messages = [entry.message for entry in instance.all_logs(result.run_id)]
    assert any("stop requested: the last micro-batch is committed" in m for m in messages)
    assert result.asset_materializations_for_node("xact_events_stream")  # the interval it cut short is reported
    rows = table_rows(lake, "xact_events")
    group = resources["ingest"].consumer_group("xact_events")
    committed = kafka.committed_offsets(group, topics.xact.events, range(3), 10)
    # What the group committed is exactly what Delta holds: no half-committed micro-batch.
    assert rows.height == sum(committed.values()) > 0
    assert rows["trace_id"].n_unique() == rows.height
    # A later streaming run picks up exactly where this one stopped.
    assert run_stream(streaming(resources, max_run_s=4), instance).success
    assert table_rows(lake, "xact_events").height == 1000


def test_a_stop_signal_is_a_request_not_an_exception():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop = StopSignal()
    with stop.listening():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
    assert stop.requested
    assert {sig: signal.getsignal(sig) for sig in before} == before
