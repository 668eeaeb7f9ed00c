"""xact_events end to end: real broker, real Delta tables, the sensor and the asset."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
from confluent_kafka import Producer
from deltalake import write_deltalake

from pipeline_defs.defs.xact.assets import xact_events
from pipeline_defs.defs.xact.sensors import xact_events_kafka_sensor
from pipeline_defs.lib.kafka.ranges import RANGES_TAG, TOPIC_TAG, decode_cursor
from pipeline_defs_tests.support.kafka import (
    execute,
    headers_of,
    metadata_of,
    produce_events,
    produce_raw,
    sample_events,
    table_rows,
    tick,
    with_ingest,
)
from pipeline_defs_tests.support.stack import TEST_STACK
from pipeline_sim.events import MALFORMED_MESSAGES, encode


def ingest_all(resources, instance, cursor=None):
    """One sensor tick and every run it requested; returns (tick data, run results)."""
    data = tick(xact_events_kafka_sensor, instance, resources, cursor)
    results = [execute(xact_events, r, resources, instance) for r in data.run_requests]
    return data, results


def test_events_land_once_with_duplicates_collapsed(resources, topics, kafka, lake, instance):
    events = sample_events(1_000)
    resent = events[:50]  # the source sends some events twice, at later offsets
    produce_events(kafka, topics.xact.events, events + resent)

    data, results = ingest_all(resources, instance)

    assert len(data.run_requests) == 3  # 1,050 offsets in runs of at most 400
    rows = table_rows(lake, "xact_events")
    assert rows.height == 1_000
    assert rows["trace_id"].n_unique() == 1_000
    assert set(rows["trace_id"]) == {e["trace_id"] for e in events}
    for result in results:
        assert all(check.passed for check in result.get_asset_check_evaluations())
    assert sum(metadata_of(r)["rows_written"] for r in results) == 1_000
    versions = [metadata_of(r)["delta_version"] for r in results]
    assert versions == sorted(versions) and len(set(versions)) == 3  # one Delta commit per run
    last = metadata_of(results[-1])
    assert last["lag_total"] == 0 and set(last["lag_by_partition"].values()) == {0}
    assert all(key.startswith(f"{topics.xact.events}[") for key in last["lag_by_partition"])
    group = resources["ingest"].consumer_group("xact_events")
    states = kafka.partition_states(topics.xact.events, 10)
    assert kafka.committed_offsets(group, topics.xact.events, states, 10) == {p: s.high for p, s in states.items()}


def test_reexecuting_a_run_adds_nothing(resources, topics, kafka, lake, instance):
    produce_events(kafka, topics.xact.events, sample_events(300))
    data, _ = ingest_all(resources, instance)
    before = table_rows(lake, "xact_events").height

    again = execute(xact_events, data.run_requests[0], resources, instance)

    metadata = metadata_of(again)
    assert metadata["rows_written"] == 0
    assert metadata["messages_read"] == 0
    assert metadata["already_committed"] == 300
    assert table_rows(lake, "xact_events").height == before == 300


def test_overlapping_ranges_add_nothing(resources, topics, kafka, lake, instance):
    produce_events(kafka, topics.xact.events, sample_events(300))
    data, _ = ingest_all(resources, instance)
    planned = data.run_requests[0]
    # A hand-made run whose ranges overlap everything already ingested and beyond.
    produce_events(kafka, topics.xact.events, sample_events(60, seed=99))
    states = kafka.partition_states(topics.xact.events, 10)
    overlapping = ",".join(f"{p}:0-{s.high}" for p, s in states.items())
    request = dg.RunRequest(
        partition_key=planned.partition_key,
        tags={TOPIC_TAG: topics.xact.events, RANGES_TAG: overlapping},
    )

    result = execute(xact_events, request, resources, instance)

    metadata = metadata_of(result)
    assert metadata["already_committed"] == 300
    assert metadata["rows_written"] == 60
    rows = table_rows(lake, "xact_events")
    assert rows.height == 360 and rows["trace_id"].n_unique() == 360


def test_backfill_of_the_day_rereads_and_adds_nothing(resources, topics, kafka, lake, instance):
    produce_events(kafka, topics.xact.events, sample_events(200))
    ingest_all(resources, instance)
    today = datetime.now(UTC).date().isoformat()

    result = dg.materialize([xact_events], partition_key=today, resources=resources, instance=instance)

    metadata = metadata_of(result)
    assert metadata["mode"] == "backfill"
    assert metadata["messages_read"] == 200
    assert metadata["duplicates_skipped"] == 200
    assert table_rows(lake, "xact_events").height == 200


def test_a_later_run_executed_first_loses_nothing(resources, topics, kafka, lake, instance):
    produce_events(kafka, topics.xact.events, sample_events(1_000))
    data = tick(xact_events_kafka_sensor, instance, resources)
    assert len(data.run_requests) == 3

    for request in reversed(data.run_requests):
        execute(xact_events, request, resources, instance)

    rows = table_rows(lake, "xact_events")
    assert rows.height == 1_000 and rows["trace_id"].n_unique() == 1_000


def test_bad_messages_go_to_the_dlq_and_valid_rows_still_land(resources, topics, kafka, lake, instance, consume_all):
    events = sample_events(100)
    produce_events(kafka, topics.xact.events, events[:50])
    produce_raw(kafka, topics.xact.events, MALFORMED_MESSAGES)
    produce_events(kafka, topics.xact.events, events[50:])

    _, results = ingest_all(resources, instance)

    assert table_rows(lake, "xact_events").height == 100
    dead = consume_all(topics.xact.events_dlq)
    assert sorted(m.value() for m in dead) == sorted(MALFORMED_MESSAGES)
    for message in dead:
        headers = headers_of(message)
        assert headers["__dlq.errors.topic"] == topics.xact.events
        assert int(headers["__dlq.errors.offset"]) >= 0
        assert headers["__dlq.errors.category"] in {"malformed", "invalid"}
        assert headers["__dlq.errors.reason"]
    assert {headers_of(m)["__dlq.errors.category"] for m in dead} == {"malformed", "invalid"}
    by_value = {m.value(): headers_of(m) for m in dead}
    assert "trace_id" in by_value[MALFORMED_MESSAGES[2]]["__dlq.errors.reason"]
    assert sum(metadata_of(r)["dead_lettered"] for r in results) == len(MALFORMED_MESSAGES)


def test_broker_down_at_tick_time_skips_quickly_and_keeps_the_cursor(resources, topics, kafka, instance):
    produce_events(kafka, topics.xact.events, sample_events(10))
    first = tick(xact_events_kafka_sensor, instance, resources)
    assert first.run_requests and first.cursor
    produce_events(kafka, topics.xact.events, sample_events(10, seed=3))

    TEST_STACK.run("down", "kafka")
    try:
        started = time.monotonic()
        skipped = tick(xact_events_kafka_sensor, instance, resources, cursor=first.cursor)
        elapsed = time.monotonic() - started
    finally:
        TEST_STACK.run("up", "kafka")

    assert not skipped.run_requests
    assert "Kafka unavailable" in skipped.skip_message
    assert skipped.cursor in (None, first.cursor)
    assert elapsed < resources["ingest"].ingest.tick_budget_s + 5  # well inside Dagster's 60 s
    resumed = tick(xact_events_kafka_sensor, instance, resources, cursor=first.cursor)
    assert sum(int(r.tags["kafka/planned_events"]) for r in resumed.run_requests) == 10
    assert decode_cursor(resumed.cursor) != decode_cursor(first.cursor)


def test_runs_per_tick_are_bounded(resources, topics, kafka, instance):
    produce_events(kafka, topics.xact.events, sample_events(1_000))
    bounded = with_ingest(resources, max_runs_per_tick=1)

    first = tick(xact_events_kafka_sensor, instance, bounded)
    second = tick(xact_events_kafka_sensor, instance, bounded, cursor=first.cursor)

    assert len(first.run_requests) == len(second.run_requests) == 1
    assert int(first.run_requests[0].tags["kafka/planned_events"]) == 400
    assert first.run_requests[0].run_key != second.run_requests[0].run_key


def test_a_sensor_waits_while_its_job_has_runs_in_flight(resources, topics, kafka, instance):
    produce_events(kafka, topics.xact.events, sample_events(1_000))
    bounded = with_ingest(resources, max_runs_in_flight=2)
    running = [dg.DagsterRun(job_name="xact_events_job", status=dg.DagsterRunStatus.STARTED) for _ in range(2)]

    first = tick(xact_events_kafka_sensor, instance, bounded)
    for run in running:
        instance.add_run(run)
    held = tick(xact_events_kafka_sensor, instance, bounded, cursor=first.cursor)
    instance.report_run_failed(running[0])
    resumed = tick(xact_events_kafka_sensor, instance, bounded, cursor=first.cursor)

    assert len(first.run_requests) == 2  # 1,000 events, 400 per run, at most 2 in flight
    assert not held.run_requests and "queued or running" in held.skip_message
    assert held.cursor in (None, first.cursor)
    assert len(resumed.run_requests) == 1 and int(resumed.run_requests[0].tags["kafka/planned_events"]) == 200


def test_start_from_latest_skips_what_was_there_and_takes_what_comes(resources, topics, kafka, lake, instance):
    produce_events(kafka, topics.xact.events, sample_events(100))
    latest = with_ingest(resources, start_from="latest")

    first = tick(xact_events_kafka_sensor, instance, latest)
    assert not first.run_requests
    new = sample_events(30, seed=7)
    produce_events(kafka, topics.xact.events, new)
    second = tick(xact_events_kafka_sensor, instance, latest, cursor=first.cursor)
    for request in second.run_requests:
        execute(xact_events, request, latest, instance)

    assert set(table_rows(lake, "xact_events")["trace_id"]) == {e["trace_id"] for e in new}


def test_a_reexecuted_run_is_checked_on_the_rows_of_its_ranges_not_on_none(resources, topics, kafka, lake, instance):
    produce_events(kafka, topics.xact.events, sample_events(40))
    data, _ = ingest_all(resources, instance)
    # Damage behind the pipeline's back: a row of the run's ranges written twice.
    rows = table_rows(lake, "xact_events")
    write_deltalake(lake.table_uri("xact_events"), rows.head(1).to_arrow(), mode="append", partition_by=["ingestion_date"])

    request = data.run_requests[0]
    again = dg.materialize(
        [xact_events],
        partition_key=request.partition_key,
        tags=request.tags,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )

    assert not again.success  # the blocking check fails the re-execution, as it failed the first run
    checks = {c.check_name: c.passed for c in again.get_asset_check_evaluations()}
    assert checks["trace_id_unique"] is False  # its ranges hold a duplicate, whoever wrote it


def test_a_backfill_after_a_lag_longer_than_the_dedup_window_adds_nothing(resources, topics, kafka, lake, instance):
    """The stream files events by the day it reads them; a backfill re-reads by the day Kafka
    stamped them. Three days of lag must not make the backfill write them twice."""
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    events = sample_events(30, seed=5)
    producer = Producer(kafka.client_config())
    for event in events:
        producer.produce(
            topics.xact.events,
            value=encode(event),
            key=event["trace_id"].encode(),
            timestamp=int(three_days_ago.timestamp() * 1000),
        )
    producer.flush(30)
    ingest_all(resources, instance)  # today's partition, three days late
    assert set(table_rows(lake, "xact_events")["ingestion_date"]) == {datetime.now(UTC).date()}

    backfill = dg.materialize(
        [xact_events], partition_key=three_days_ago.date().isoformat(), resources=resources, instance=instance
    )

    assert metadata_of(backfill)["rows_written"] == 0
    rows = table_rows(lake, "xact_events")
    assert rows.height == 30 and rows["trace_id"].n_unique() == 30


def test_a_backfill_leaves_what_the_stream_has_not_read_yet_to_the_stream(resources, topics, kafka, lake, instance):
    produce_events(kafka, topics.xact.events, sample_events(20))
    first, _ = ingest_all(resources, instance)
    later = sample_events(10, seed=77)
    produce_events(kafka, topics.xact.events, later)
    today = datetime.now(UTC).date().isoformat()

    backfill = dg.materialize([xact_events], partition_key=today, resources=resources, instance=instance)
    assert metadata_of(backfill)["messages_read"] == 20  # only what the stream had passed

    ingest_all(resources, instance, first.cursor)
    rows = table_rows(lake, "xact_events")
    assert rows.height == 30 and rows["trace_id"].n_unique() == 30
