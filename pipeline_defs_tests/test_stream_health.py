"""What operators see when a stream cannot go on: a stalled range, a recreated topic, a corrupt
cursor, a failed run; and how they get it going again. Real broker, real Delta tables."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from pipeline_defs.defs.health.alerts import asset_check_failure_alert_sensor, run_failure_alert_sensor
from pipeline_defs.defs.xact.assets import xact_events
from pipeline_defs.defs.xact.sensors import xact_events_kafka_sensor
from pipeline_defs.lib.health.alerts import AlertWebhookResource
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


class Receiver(BaseHTTPRequestHandler):
    posts: list = []

    def do_POST(self):
        Receiver.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    Receiver.posts = []
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/teams"
    server.shutdown()


def test_a_failed_run_is_posted_to_the_webhook_as_a_teams_card(instance, webhook):
    run = instance.add_run(
        dg.DagsterRun(job_name="xact_events_job", tags={RANGES_TAG: "0:0-1"}, status=dg.DagsterRunStatus.STARTED)
    )
    instance.report_run_failed(run, message="KafkaUnavailableError: broker down")
    failure = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1].dagster_event

    context = dg.build_run_status_sensor_context(
        sensor_name=run_failure_alert_sensor.name,
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run.run_id),
    )
    run_failure_alert_sensor(
        context.for_run_failure(), alert_webhook=AlertWebhookResource(url=webhook, dagster_url="http://dagster.example")
    )

    (message,) = Receiver.posts
    assert message["type"] == "message"
    card = message["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    facts = {f["title"]: f["value"] for f in card["content"]["body"][-1]["facts"]}
    assert facts["run"] == run.run_id and facts["ranges"] == "0:0-1" and facts["job"] == "xact_events_job"
    assert "broker down" in json.dumps(card)
    assert card["content"]["actions"][0]["url"] == f"http://dagster.example/runs/{run.run_id}"


def test_without_a_webhook_the_alert_is_logged(caplog):
    assert AlertWebhookResource().post({"type": "message"}) is False
    assert "no webhook configured" in caplog.text


@pytest.fixture
def consolidated_instance(tmp_path):
    """An instance whose event log is one store, as PostgreSQL's is in deployments (the default test
    instance shards it per run, which cannot be read across runs by storage id)."""
    storage = {
        "module": "dagster.core.storage.event_log",
        "class": "ConsolidatedSqliteEventLogStorage",
        "config": {"base_dir": str(tmp_path / "events")},
    }
    with dg.instance_for_test(overrides={"event_log_storage": storage}) as test_instance:
        yield test_instance


def test_a_failed_asset_check_is_posted_once_and_history_is_not(consolidated_instance, webhook):
    instance = consolidated_instance

    @dg.asset(check_specs=[dg.AssetCheckSpec("rows_match", asset="ledger")])
    def ledger() -> dg.MaterializeResult:
        return dg.MaterializeResult(
            check_results=[dg.AssetCheckResult(check_name="rows_match", passed=False, metadata={"missing_rows": 3})]
        )

    dg.materialize([ledger], instance=instance)  # before the sensor's first tick: history
    context = dg.build_sensor_context(
        instance=instance, resources={"alert_webhook": AlertWebhookResource(url=webhook, dagster_url="http://dagster.example")}
    )
    first = asset_check_failure_alert_sensor.evaluate_tick(context)
    assert Receiver.posts == [] and first.cursor
    run = dg.materialize([ledger], instance=instance)
    context.update_cursor(first.cursor)
    second = asset_check_failure_alert_sensor.evaluate_tick(context)
    (message,) = Receiver.posts
    card = message["attachments"][0]["content"]
    facts = {f["title"]: f["value"] for f in card["body"][-1]["facts"]}
    assert card["body"][0]["text"] == "Asset check failed (ERROR): ledger rows_match"
    assert facts["run"] == run.run_id and facts["missing_rows"] == "3"
    context.update_cursor(second.cursor)
    asset_check_failure_alert_sensor.evaluate_tick(context)
    assert len(Receiver.posts) == 1  # once each
