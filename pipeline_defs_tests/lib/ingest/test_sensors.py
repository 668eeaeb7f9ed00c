"""The offset-range sensor on its own: ``dg.build_sensor_context`` over a Kafka cluster held in
memory (``FakeKafka``). Planning, backpressure, gating, cursors and stalls, with no services."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from pipeline_defs.defs.xact.feeds import XACT_EVENTS_FEED
from pipeline_defs.defs.xact.sensors import xact_events_stream_job, xact_events_stream_sensor
from pipeline_defs.defs.xact.settings import XactTopics, XactTopicsResource
from pipeline_defs.lib.ingest.planning import RESET_MARK
from pipeline_defs.lib.ingest.sensors import build_offset_range_sensor
from pipeline_defs.lib.ingest.stream_jobs import stream_job_name
from pipeline_defs.lib.kafka.ranges import RANGES_TAG, SLOT_TAG, TOPIC_TAG, decode_cursor
from pipeline_defs.lib.policies import ingestion_days
from pipeline_defs.lib.settings import IngestConfigResource, IngestSettings, StreamSettings
from pipeline_defs_tests.support.fakes import FakeKafka

TOPIC = "events.raw"
CHECK = dg.AssetCheckKey(dg.AssetKey("upstream"), "keys_unique")


@dg.asset(partitions_def=ingestion_days)
def stub() -> None:
    """Stands in for the asset the sensor's runs would materialize."""


stub_job = dg.define_asset_job("stub_job", selection=[stub])
sensor = build_offset_range_sensor(
    name="sensor_under_test", job=stub_job, feed=XACT_EVENTS_FEED, description="test", gated_by=[CHECK]
)
LOCATION = dg.Definitions(assets=[stub], jobs=[stub_job], sensors=[sensor])


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def resources(kafka: FakeKafka, **ingest: Any) -> dict[str, object]:
    settings = IngestSettings(**{"max_events_per_run": 100, "max_runs_per_tick": 10, "max_runs_in_flight": 10, **ingest})
    return {
        "source_kafka": kafka,
        "ingest": IngestConfigResource(ingest=settings),
        "xact_topics": XactTopicsResource(topics=XactTopics(events=TOPIC)),
    }


def tick(kafka: FakeKafka, instance: dg.DagsterInstance, cursor: str | None = None, **ingest: Any) -> Any:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources(kafka, **ingest), definitions=LOCATION
    )
    return sensor.evaluate_tick(context)


def test_the_backlog_is_shared_fairly_in_bounded_runs_with_deterministic_keys(instance):
    kafka = FakeKafka.new().with_topic(TOPIC, {0: 250, 1: 10, 2: 0})

    data = tick(kafka, instance)

    ranges = [r.tags[RANGES_TAG] for r in data.run_requests]
    assert ranges == ["0:0-90,1:0-10", "0:90-190", "0:190-250"]
    assert all(r.tags[TOPIC_TAG] == TOPIC and r.run_key == f"{TOPIC}@{r.tags[RANGES_TAG]}" for r in data.run_requests)
    assert decode_cursor(data.cursor) == {TOPIC: {0: 250, 1: 10, 2: 0}}
    again = tick(kafka, instance, data.cursor)
    assert not again.run_requests and again.skip_message == "no new offsets"


def test_runs_per_tick_and_runs_in_flight_bound_what_is_planned(instance):
    kafka = FakeKafka.new().with_topic(TOPIC, {0: 1_000})

    assert len(tick(kafka, instance, max_runs_per_tick=2).run_requests) == 2
    for _ in range(3):
        instance.add_run(dg.DagsterRun(job_name=stub_job.name, status=dg.DagsterRunStatus.STARTED))
    held = tick(kafka, instance, max_runs_in_flight=3)
    assert not held.run_requests and "3 stub_job runs queued or running" in held.skip_message


def test_with_two_writers_per_table_the_runs_in_flight_never_share_a_partition_and_name_their_slot(instance):
    kafka = FakeKafka.new().with_topic(TOPIC, {0: 100, 1: 100, 2: 100, 3: 100})
    two: dict[str, Any] = {"writers_per_table": 2, "max_events_per_run": 1_000}

    first = tick(kafka, instance, **two)
    assert [(r.tags[RANGES_TAG], r.tags[SLOT_TAG]) for r in first.run_requests] == [
        ("0:0-100,2:0-100", f"{TOPIC}:0/2"),
        ("1:0-100,3:0-100", f"{TOPIC}:1/2"),
    ]
    running = {TOPIC_TAG: TOPIC, RANGES_TAG: "1:0-100,3:0-100"}
    instance.add_run(dg.DagsterRun(job_name=stub_job.name, status=dg.DagsterRunStatus.STARTED, tags=running))
    kafka.with_topic(TOPIC, {0: 150, 1: 150, 2: 150, 3: 150})

    second = tick(kafka, instance, first.cursor, **two)

    assert [r.tags[RANGES_TAG] for r in second.run_requests] == ["0:100-150,2:100-150"]
    assert decode_cursor(second.cursor) == {TOPIC: {0: 150, 1: 100, 2: 150, 3: 100}}
    assert SLOT_TAG not in tick(FakeKafka.new().with_topic(TOPIC, {0: 5}), instance).run_requests[0].tags


@pytest.mark.parametrize("ranges", ["{not ranges", "0:9-1", "-1:0-5", "0:0-5,,x", "\x00" * 300, ""])
def test_a_run_in_flight_with_an_unreadable_ranges_tag_holds_no_slot(instance, ranges):
    """Tags anyone can set in the Launchpad: such a run fails before it reads anything."""
    kafka = FakeKafka.new().with_topic(TOPIC, {0: 10, 1: 10})
    tags = {TOPIC_TAG: TOPIC, RANGES_TAG: ranges}
    instance.add_run(dg.DagsterRun(job_name=stub_job.name, status=dg.DagsterRunStatus.STARTED, tags=tags))

    data = tick(kafka, instance, writers_per_table=2)

    assert [r.tags[RANGES_TAG] for r in data.run_requests] == ["0:0-10", "1:0-10"]


def test_with_two_writers_and_room_for_one_run_the_slots_take_turns(instance):
    kafka = FakeKafka.new().with_topic(TOPIC, {0: 10_000, 1: 10})
    one_run: dict[str, Any] = {"writers_per_table": 2, "max_runs_per_tick": 1, "max_events_per_run": 100}
    slots = []
    cursor = None
    for _ in range(4):
        data = tick(kafka, instance, cursor, **one_run)
        (request,) = data.run_requests
        slots.append(request.tags[SLOT_TAG])
        finished = {TOPIC_TAG: TOPIC, RANGES_TAG: request.tags[RANGES_TAG]}
        instance.add_run(dg.DagsterRun(job_name=stub_job.name, status=dg.DagsterRunStatus.SUCCESS, tags=finished))
        cursor = data.cursor

    # partition 1's ten events are not starved by partition 0's backlog, then slot 0 has the ticks
    assert slots == [f"{TOPIC}:0/2", f"{TOPIC}:1/2", f"{TOPIC}:0/2", f"{TOPIC}:0/2"]


def test_a_failed_blocking_check_upstream_holds_planning(instance):
    kafka = FakeKafka.new().with_topic(TOPIC, {0: 5})
    failed = dg.AssetCheckEvaluation(asset_key=CHECK.asset_key, check_name=CHECK.name, passed=False)
    instance.report_runless_asset_event(failed)

    held = tick(kafka, instance)

    assert not held.run_requests and "blocking check upstream:keys_unique failed" in held.skip_message
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(asset_key=CHECK.asset_key, check_name=CHECK.name, passed=True))
    assert tick(kafka, instance).run_requests


def test_a_broker_that_does_not_answer_keeps_the_cursor(instance):
    kafka = FakeKafka.new().with_topic(TOPIC, {0: 5})
    first = tick(kafka, instance)
    kafka.go_down()

    down = tick(kafka, instance, first.cursor)

    assert not down.run_requests and down.skip_message.startswith("Kafka unavailable")
    assert down.cursor in (None, first.cursor)


@pytest.mark.parametrize("cursor", ["{not json", '{"topics": []}', '{"topics": {"t": {"0": -1}}}', '"a string"'])
def test_an_unreadable_cursor_restarts_from_the_committed_offsets(instance, cursor):
    kafka = FakeKafka.new().with_topic(TOPIC, {0: 50})
    kafka.commit_offsets("pipeline.xact_events", {(TOPIC, 0): 30})

    data = tick(kafka, instance, cursor)

    assert [r.tags[RANGES_TAG] for r in data.run_requests] == ["0:30-50"]


def test_a_partition_whose_log_end_fell_below_the_cursor_waits_for_an_operator_reset(instance):
    kafka = FakeKafka.new().with_topic(TOPIC, {0: 500, 1: 20})
    first = tick(kafka, instance)
    kafka.with_topic(TOPIC, {0: 8, 1: 40})  # partition 0 was truncated (or the topic recreated)

    stuck = tick(kafka, instance, first.cursor)

    assert [r.tags[RANGES_TAG] for r in stuck.run_requests] == ["1:20-40"]  # the healthy partition goes on
    kafka.commit_offsets("pipeline.xact_events", {(TOPIC, 0): 0}, metadata=f"{RESET_MARK}:run-1")
    resumed = tick(kafka, instance, stuck.cursor)
    assert [r.tags[RANGES_TAG] for r in resumed.run_requests] == ["0:0-8"]


def test_three_failed_runs_in_a_row_pause_planning_until_the_probe_interval(instance):
    kafka = FakeKafka.new().with_topic(TOPIC, {0: 10})
    for _ in range(3):
        run = instance.add_run(dg.DagsterRun(job_name=stub_job.name, tags={RANGES_TAG: "0:0-10", TOPIC_TAG: TOPIC}))
        instance.report_run_failed(run)

    paused = tick(kafka, instance, stall_probe_interval_s=3600)
    probing = tick(kafka, instance, stall_probe_interval_s=0)

    assert not paused.run_requests and paused.skip_message.startswith("stalled: the last 3 stub_job runs failed")
    assert probing.run_requests


# ---- the streaming path's sensors --------------------------------------------------------

streamed_sensor = build_offset_range_sensor(
    name="streamed_sensor_under_test", job=stub_job, feed=XACT_EVENTS_FEED, description="test", streamed=True
)
STREAM_JOB = stream_job_name(XACT_EVENTS_FEED)


def test_a_batch_sensor_gives_way_to_a_streaming_run_then_catches_up_with_its_commits(instance):
    kafka = FakeKafka.new().with_topic(TOPIC, {0: 100})
    first = streamed_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources=resources(kafka), definitions=LOCATION)
    )
    stream = instance.add_run(dg.DagsterRun(job_name=STREAM_JOB, status=dg.DagsterRunStatus.STARTED))
    kafka.with_topic(TOPIC, {0: 500})

    def tick_streamed(cursor: str | None) -> Any:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources(kafka), definitions=LOCATION)
        return streamed_sensor.evaluate_tick(context)

    held = tick_streamed(first.cursor)
    assert not held.run_requests and held.skip_message.startswith(f"streaming run {stream.run_id} consumes this feed")
    kafka.commit_offsets("pipeline.xact_events", {(TOPIC, 0): 420})  # the stream's progress, committed after Delta
    instance.report_run_canceled(stream)

    resumed = tick_streamed(first.cursor)
    assert [r.tags[RANGES_TAG] for r in resumed.run_requests] == ["0:420-500"]


def keep_alive(instance: dg.DagsterInstance, cursor: str | None = None, **stream: Any) -> Any:
    ingest = IngestSettings(stream=StreamSettings(**stream))
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"ingest": IngestConfigResource(ingest=ingest)})
    return xact_events_stream_sensor.evaluate_tick(context)


def test_the_stream_sensor_keeps_one_run_alive_with_one_key_per_generation(instance):
    first = keep_alive(instance)
    assert [r.run_key for r in first.run_requests] == ["xact_events:stream:1"] and first.cursor == "1"
    run = instance.add_run(dg.DagsterRun(job_name=xact_events_stream_job.name, status=dg.DagsterRunStatus.STARTED))

    alive = keep_alive(instance, first.cursor)
    assert not alive.run_requests and alive.skip_message == f"streaming run {run.run_id} is started"

    instance.report_run_failed(run)
    restarted = keep_alive(instance, first.cursor)
    assert [r.run_key for r in restarted.run_requests] == ["xact_events:stream:2"]
    assert [r.run_key for r in keep_alive(instance, "not a number").run_requests] == ["xact_events:stream:1"]


def test_the_stream_sensor_does_nothing_while_streaming_is_off(instance):
    off = keep_alive(instance, enabled=False)
    assert not off.run_requests and off.skip_message.startswith("streaming is off")
