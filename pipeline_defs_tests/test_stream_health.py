"""What operators see when a stream cannot go on: a stalled range, a recreated topic, a corrupt
cursor; and how they get it going again. Real broker, real Delta tables. (The alerts on failed
runs and checks: ``defs/health/test_alerts.py``.)"""

from __future__ import annotations

import dagster as dg

from pipeline_defs.defs.xact.assets import xact_events
from pipeline_defs.defs.xact.sensors import xact_events_kafka_sensor
from pipeline_defs.lib.kafka.ranges import RANGES_TAG, TOPIC_TAG
from pipeline_defs_tests.support.kafka import execute, location, produce_events, sample_events, table_rows, tick, with_ingest

CHECK = dg.AssetCheckKey(dg.AssetKey("xact_events"), "consumer_keeps_up")


def ingest_all(resources, instance, cursor=None):
    data = tick(xact_events_kafka_sensor, instance, resources, cursor)
    for request in data.run_requests:
        assert execute(xact_events, request, resources, instance).success
    return data


def evaluate_check(resources, instance) -> dg.AssetCheckEvaluation:
    job = (
        location(resources)
        .resolve_implicit_global_asset_job_def()
        .get_subset(asset_check_selection={CHECK}, asset_selection=set())
    )
    result = job.execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def reset_job(resources) -> dg.JobDefinition:
    return location(resources).resolve_job_def("kafka_offsets_reset_job")


def test_a_recreated_topic_is_named_by_the_sensor_and_the_check_and_the_reset_job_resumes_it(
    resources, topics, kafka, lake, instance
):
    produce_events(kafka, topics.xact.events, sample_events(90))
    first = ingest_all(resources, instance)
    admin = kafka.admin()
    for future in admin.delete_topics([topics.xact.events], operation_timeout=30).values():
        future.result(30)
    kafka.create_topics([topics.xact.events], 3)
    fresh = sample_events(9, seed=41)
    produce_events(kafka, topics.xact.events, fresh)

    stuck = tick(xact_events_kafka_sensor, instance, resources, first.cursor)

    assert not stuck.run_requests
    assert "below the next planned offset" in stuck.skip_message and "kafka_offsets_reset_job" in stuck.skip_message
    evaluation = evaluate_check(resources, instance)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR, evaluation.metadata
    assert evaluation.metadata["offsets_past_log_end"].value  # names the partitions

    reset = reset_job(resources).execute_in_process(
        run_config={
            "ops": {
                "reset_kafka_offsets": {
                    "config": {
                        "table": "xact_events",
                        "topic": topics.xact.events,
                        "to": "earliest",
                        "reason": "topic recreated",
                        "confirm": True,
                    }
                }
            }
        },
        resources=resources,
        instance=instance,
    )
    assert reset.success
    ingest_all(resources, instance, stuck.cursor or first.cursor)

    rows = table_rows(lake, "xact_events")
    assert rows.height == 99 and set(rows["trace_id"]) >= {e["trace_id"] for e in fresh}
    assert evaluate_check(resources, instance).passed


def test_the_reset_job_refuses_without_confirm(resources, topics, instance):
    result = reset_job(resources).execute_in_process(
        run_config={
            "ops": {"reset_kafka_offsets": {"config": {"table": "xact_events", "topic": topics.xact.events, "reason": "oops"}}}
        },
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "confirm" in str(failure.step_failure_data.error)


def test_a_stalled_range_pauses_the_sensor_and_says_which_range_and_why(resources, topics, kafka, instance):
    produce_events(kafka, topics.xact.events, sample_events(20))
    stalling = with_ingest(resources, stall_after_failed_runs=3, stall_probe_interval_s=3600)
    for _ in range(3):
        run = instance.add_run(
            dg.DagsterRun(
                job_name="xact_events_job",
                tags={TOPIC_TAG: topics.xact.events, RANGES_TAG: "0:0-7"},
                status=dg.DagsterRunStatus.STARTED,
            )
        )
        instance.report_run_failed(run, message="StorageUnavailable: upload to the lake failed")

    paused = tick(xact_events_kafka_sensor, instance, stalling)

    assert not paused.run_requests
    assert paused.skip_message.startswith("stalled: the last 3 xact_events_job runs failed")
    assert f"{topics.xact.events}@0:0-7" in paused.skip_message and "StorageUnavailable" in paused.skip_message
    probing = tick(
        xact_events_kafka_sensor, instance, with_ingest(resources, stall_after_failed_runs=3, stall_probe_interval_s=0)
    )
    assert probing.run_requests  # once the probe interval has passed, planning tries again


def test_a_corrupt_cursor_restarts_planning_from_the_committed_offsets(resources, topics, kafka, lake, instance):
    produce_events(kafka, topics.xact.events, sample_events(50))
    first = ingest_all(resources, instance)
    produce_events(kafka, topics.xact.events, sample_events(10, seed=9))

    for corrupt in ("{not json", '{"topics": {"t": {"0": "minus one"}}}', '{"topics": {"t": {"0": -5}}}', "[]"):
        data = tick(xact_events_kafka_sensor, instance, resources, corrupt)
        assert data.run_requests, corrupt
    for request in data.run_requests:
        execute(xact_events, request, resources, instance)
    assert table_rows(lake, "xact_events").height == 60
    assert first.cursor
