"""DLQ views and operations: real Kafka, real Delta, the attachment host on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from dataclasses import replace
from types import SimpleNamespace

import dagster as dg
import polars as pl
import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from pipeline_defs.cli import dlq as dlq_cli
from pipeline_defs.defs.dlq.checks import graded
from pipeline_defs.defs.dlq.operations import launched_by
from pipeline_defs.defs.dlq.settings import DlqLimitsResource, DlqSettings
from pipeline_defs.defs.xact.assets import xact_attachments, xact_events
from pipeline_defs.defs.xact.models import XactDownloadTask
from pipeline_defs.defs.xact.sensors import xact_attachments_pending_sensor, xact_events_kafka_sensor
from pipeline_defs.domains import DLQ_DOMAIN, DLQ_VIEWS
from pipeline_defs.lib.dlq.operations import DlqFilter, Operation
from pipeline_defs.lib.dlq.operations import replay as replay_entries
from pipeline_defs.lib.ingest.failures import FailureCategory, TaskFailure
from pipeline_defs.lib.ingest.tasks import parse_task, route_failure
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs_tests.support.kafka import execute, location, produce_events, produce_raw, table_rows, tick
from pipeline_sim.attachment_host import AttachmentHost
from pipeline_sim.events import MALFORMED_MESSAGES, xact_event

VIEWS = {asset.key.path[-1]: asset for asset in DLQ_DOMAIN.defs.assets or () if isinstance(asset, dg.AssetsDefinition)}
SENSORS = {sensor.name: sensor for sensor in DLQ_DOMAIN.defs.sensors or ()}
DLQ_CHECKS = list(DLQ_DOMAIN.defs.asset_checks or ())
EVENTS_VIEW, DOWNLOADS_VIEW = VIEWS["dlq_xact_events"], VIEWS["dlq_xact_downloads"]
EVENTS_SENSOR, DOWNLOADS_SENSOR = SENSORS["dlq_xact_events_sensor"], SENSORS["dlq_xact_downloads_sensor"]


@pytest.fixture(scope="module")
def host():
    server = AttachmentHost(host_name="attachments.test").start_in_thread()
    yield server
    server.stop_thread()


def event_with(*urls: str) -> dict:
    event = xact_event(random.Random(), "http://unused")
    return {**event, "trace_id": f"T-{uuid.uuid4().hex[:10]}", "attachments": list(urls)}


def run_pipeline(resources, instance) -> None:
    """Events -> attachments -> both DLQ views, one tick each."""
    for sensor, asset in (
        (xact_events_kafka_sensor, xact_events),
        (xact_attachments_pending_sensor, xact_attachments),
    ):
        for request in tick(sensor, instance, resources).run_requests:
            execute(asset, request, resources, instance)
    refresh_views(resources, instance)


def refresh_views(resources, instance) -> None:
    for sensor, asset in ((EVENTS_SENSOR, EVENTS_VIEW), (DOWNLOADS_SENSOR, DOWNLOADS_VIEW)):
        for request in tick(sensor, instance, resources).run_requests:
            dg.materialize([asset], tags=request.tags, resources=resources, instance=instance)


def view(lake, name: str) -> pl.DataFrame:
    return table_rows(lake, f"dlq_{name}")


def audit(lake) -> pl.DataFrame:
    return table_rows(lake, "dlq_audit")


def operate(job_name, op_name, resources, instance, **config):
    """The job as the Launchpad launches it (the UI tags its runs dagster/from_ui)."""
    return (
        location(resources)
        .resolve_job_def(job_name)
        .execute_in_process(
            run_config={"ops": {op_name: {"config": config}}},
            resources=resources,
            instance=instance,
            raise_on_error=False,
            tags={"dagster/from_ui": "true"},
        )
    )


def replay(resources, instance, **config):
    return operate("dlq_replay_job", "replay_dlq_entries", resources, instance, **config)


def test_a_permanent_failure_shows_in_the_view_and_replay_lands_it_once_fixed(resources, topics, kafka, lake, instance, host):
    path = f"files/fixable/{uuid.uuid4().hex}.pdf"
    host.fail(path, 404)
    event = event_with(host.url(path))
    produce_events(kafka, topics.xact.events, [event])
    run_pipeline(resources, instance)

    (entry,) = view(lake, "xact_downloads").to_dicts()
    assert entry["item_id"] == event["trace_id"] and entry["entry_id"] == f"{event['trace_id']}|{host.url(path)}"
    assert entry["error_category"] == "permanent" and "http_404" in entry["reason"]
    assert entry["status"] == "waiting" and entry["retry_count"] == 0
    assert entry["source_topic"] == topics.xact.downloads_pending
    assert table_rows(lake, "xact_attachments").height == 0

    host.heal(path)
    result = replay(resources, instance, dlq="xact_downloads", ids=[event["trace_id"]], dry_run=False, reason="host fixed")
    assert result.success
    for request in tick(xact_attachments_pending_sensor, instance, resources).run_requests:
        execute(xact_attachments, request, resources, instance)

    assert table_rows(lake, "xact_attachments")["trace_id"].to_list() == [event["trace_id"]]
    (entry,) = view(lake, "xact_downloads").to_dicts()
    assert entry["status"] == "replayed" and entry["status_reason"] == "host fixed"
    (row,) = audit(lake).to_dicts()
    assert (row["operation"], row["outcome"], row["entry_ids"]) == ("replay", "applied", [entry["entry_id"]])
    assert row["run_id"] == result.run_id and row["launched_by"] == "ui"
    assert json.loads(row["filters"])["ids"] == [event["trace_id"]]


def test_dry_run_changes_nothing_and_filters_touch_only_matching_entries(
    resources, topics, kafka, lake, instance, host, consume_all
):
    gone, blocked = host.url("status/404/a.pdf"), "http://10.0.0.7/files/b.pdf"
    produce_events(kafka, topics.xact.events, [event_with(gone, blocked)])
    run_pipeline(resources, instance)
    before = view(lake, "xact_downloads").sort("entry_id")
    assert before.height == 2

    dry = replay(resources, instance, dlq="xact_downloads", reason="check")
    assert dry.success
    assert view(lake, "xact_downloads").sort("entry_id").equals(before)
    assert len(consume_all(topics.xact.downloads_pending)) == 2  # only the original tasks

    replay(resources, instance, dlq="xact_downloads", ids=[f"{before['item_id'][0]}|{gone}"], dry_run=False, reason="one")

    statuses = dict(view(lake, "xact_downloads").select("entry_id", "status").iter_rows())
    assert sorted(statuses.values()) == ["replayed", "waiting"]
    assert [json.loads(m.value())["attachment_url"] for m in consume_all(topics.xact.downloads_pending)][2:] == [gone]
    outcomes = audit(lake).sort("at")["outcome"].to_list()
    assert outcomes == ["dry_run", "applied"]


def test_purge_is_refused_without_confirmation_and_stays_purged(resources, topics, kafka, lake, instance, host):
    produce_events(kafka, topics.xact.events, [event_with(host.url("status/410/x.pdf"))])
    run_pipeline(resources, instance)

    refused = operate("dlq_purge_job", "purge_dlq_entries", resources, instance, dlq="xact_downloads", reason="noise")
    assert not refused.success
    (failure,) = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "set confirm to true" in failure.event_specific_data.user_failure_data.description
    assert view(lake, "xact_downloads")["status"].to_list() == ["waiting"]

    purged = operate(
        "dlq_purge_job", "purge_dlq_entries", resources, instance, dlq="xact_downloads", reason="noise", confirm=True
    )
    assert purged.success
    (entry,) = view(lake, "xact_downloads").to_dicts()
    assert entry["status"] == "purged" and entry["payload"] is None

    dg.materialize([DOWNLOADS_VIEW], resources=resources, instance=instance)  # rebuild from the whole topic
    assert view(lake, "xact_downloads")["status"].to_list() == ["purged"]
    assert audit(lake).sort("at")["outcome"].to_list() == ["refused", "applied"]


def test_resolve_needs_a_reason_and_marks_entries_handled(resources, topics, kafka, lake, instance, host):
    produce_events(kafka, topics.xact.events, [event_with(host.url("status/404/r.pdf"))])
    run_pipeline(resources, instance)

    assert not operate("dlq_resolve_job", "resolve_dlq_entries", resources, instance, dlq="xact_downloads").success
    assert operate(
        "dlq_resolve_job", "resolve_dlq_entries", resources, instance, dlq="xact_downloads", reason="file withdrawn"
    ).success

    (entry,) = view(lake, "xact_downloads").to_dicts()
    assert (entry["status"], entry["status_reason"]) == ("resolved", "file withdrawn")
    assert audit(lake).sort("at")[["operation", "outcome"]].rows() == [("resolve", "refused"), ("resolve", "applied")]


def test_replaying_twice_does_not_duplicate_downstream(resources, topics, kafka, lake, instance, host):
    path = f"files/twice/{uuid.uuid4().hex}.pdf"
    host.fail(path, 404)
    produce_events(kafka, topics.xact.events, [event_with(host.url(path))])
    run_pipeline(resources, instance)
    host.heal(path)

    for statuses in (["waiting"], ["replayed"]):
        replay(resources, instance, dlq="xact_downloads", statuses=statuses, dry_run=False, reason="again")
    for request in tick(xact_attachments_pending_sensor, instance, resources).run_requests:
        execute(xact_attachments, request, resources, instance)

    assert table_rows(lake, "xact_attachments").height == 1
    assert audit(lake)["entry_count"].to_list() == [1, 1]


def test_bad_events_replay_their_exact_bytes_and_a_refailure_updates_the_same_entry(
    resources, topics, kafka, lake, instance, consume_all
):
    produce_raw(kafka, topics.xact.events, MALFORMED_MESSAGES[:2])
    run_pipeline(resources, instance)
    entries = view(lake, "xact_events").sort("source_offset")
    assert entries.height == 2 and set(entries["error_category"]) == {"malformed"}
    assert entries["entry_id"][0].startswith(f"{topics.xact.events}:")

    replay(resources, instance, dlq="xact_events", dry_run=False, reason="parser fixed?")
    run_pipeline(resources, instance)  # they fail again

    after = view(lake, "xact_events")
    assert after.height == 2 and set(after["status"]) == {"waiting"}  # same entries, waiting again
    resent = consume_all(topics.xact.events)[-2:]
    assert sorted(m.value() for m in resent) == sorted(MALFORMED_MESSAGES[:2])


def test_the_cli_mirrors_the_jobs(resources, topics, kafka, lake, instance, host, monkeypatch, capsys):
    withdrawn, fixable = host.url("status/404/cli-withdrawn.pdf"), host.url("status/404/cli.pdf")
    produce_events(kafka, topics.xact.events, [event_with(withdrawn, fixable)])
    run_pipeline(resources, instance)
    for name, value in {
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": kafka.connection.bootstrap_servers,
        "PIPELINE_STORAGE__LAKE_ROOT": lake.storage.lake_root,
        "PIPELINE_XACT__TOPICS__DOWNLOADS_PENDING": topics.xact.downloads_pending,
        "PIPELINE_XACT__TOPICS__DOWNLOADS_DLQ": topics.xact.downloads_dlq,
        "PIPELINE_CONFIG_FILE": "/nonexistent.yaml",
    }.items():
        monkeypatch.setenv(name, value)

    assert dlq_cli.main(["list", "--dlq", "xact_downloads"]) == 0
    assert "http_404" in capsys.readouterr().out
    withdrawn_id = next(e for e in view(lake, "xact_downloads")["entry_id"] if e.endswith(withdrawn))
    assert dlq_cli.main(["inspect", "--dlq", "xact_downloads", withdrawn_id]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert inspected["entry_id"] == withdrawn_id and json.loads(inspected["payload"])["task"]["attachment_url"] == withdrawn
    assert dlq_cli.main(["inspect", "--dlq", "xact_downloads", "no-such-entry"]) == 1
    assert dlq_cli.main(["resolve", "--dlq", "xact_downloads", "--ids", withdrawn_id, "--reason", "withdrawn"]) == 0
    assert dlq_cli.main(["purge", "--dlq", "xact_downloads", "--reason", "x"]) == 2
    assert dlq_cli.main(["replay", "--dlq", "xact_downloads", "--apply", "--reason", "from cli"]) == 0

    statuses = {e: s for e, s in view(lake, "xact_downloads").select("entry_id", "status").iter_rows()}
    assert statuses.pop(withdrawn_id) == "resolved" and list(statuses.values()) == ["replayed"]
    rows = audit(lake).sort("at").to_dicts()
    assert [(r["operation"], r["outcome"]) for r in rows] == [
        ("resolve", "applied"),
        ("purge", "refused"),
        ("replay", "applied"),
    ]
    assert rows[-1]["launched_by"].startswith("cli:") and rows[-1]["run_id"].startswith("cli-")


def test_health_grades_warn_and_error():
    assert graded(0.5, 1, 10, {}).passed
    warn = graded(1, 1, 10, {})
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert graded(10, 1, 10, {}).severity == dg.AssetCheckSeverity.ERROR


def test_view_metadata_counts_by_category_and_checks_warn_on_growth(resources, topics, kafka, lake, instance, host):
    produce_events(kafka, topics.xact.events, [event_with(*(host.url(f"status/404/g{i}.pdf") for i in range(3)))])
    run_pipeline(resources, instance)
    sensitive = DlqSettings(growth_window_min=60, growth_warn_per_min=0.01, growth_error_per_min=100)
    strict = {**resources, "dlq_limits": DlqLimitsResource(limits=sensitive)}

    view_checks = [c for c in DLQ_CHECKS if DOWNLOADS_VIEW.key in {k.asset_key for k in c.check_keys}]
    result = dg.materialize([DOWNLOADS_VIEW, *view_checks], resources=strict, instance=instance)

    (materialization,) = result.get_asset_materialization_events()
    metadata = materialization.materialization.metadata
    assert metadata["waiting"].value == 3 and metadata["waiting_by_category"].value == {"permanent": 3}
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["growth_rate"].passed and checks["growth_rate"].severity == dg.AssetCheckSeverity.WARN
    assert checks["oldest_entry_age"].passed

    for error_hours, severity in ((24, dg.AssetCheckSeverity.WARN), (0.0001, dg.AssetCheckSeverity.ERROR)):
        impatient = DlqLimitsResource(limits=DlqSettings(oldest_warn_hours=0.0001, oldest_error_hours=error_hours))
        aged = dg.materialize([DOWNLOADS_VIEW, *view_checks], resources={**resources, "dlq_limits": impatient}, instance=instance)
        (age,) = [c for c in aged.get_asset_check_evaluations() if c.check_name == "oldest_entry_age"]
        assert not age.passed and age.severity == severity and age.metadata["waiting"].value == 3


def test_the_audit_names_the_operator_and_where_the_run_came_from():
    assert launched_by("jane.doe", {"dagster/from_ui": "true"}) == "jane.doe (ui)"
    assert launched_by("", {"dagster/sensor_name": "nightly", "dagster/from_ui": "true"}) == "sensor:nightly"
    assert launched_by("", {"dagster/backfill": "abc"}) == "backfill:abc"
    assert launched_by("", {}) == "unknown"


def test_an_unreadable_task_is_an_entry_of_its_source_record_and_the_view_goes_on(
    resources, topics, kafka, lake, instance, host, consume_all
):
    garbage = b"\x00 not a task"
    produce_raw(kafka, topics.xact.downloads_pending, [garbage])
    produce_events(kafka, topics.xact.events, [event_with(host.url("status/404/beside.pdf"))])
    run_pipeline(resources, instance)

    entries = {e["item_id"]: e for e in view(lake, "xact_downloads").to_dicts()}
    assert len(entries) == 2
    unreadable = entries[None]
    assert unreadable["payload"] == garbage and unreadable["error_category"] == "malformed"
    assert unreadable["entry_id"].startswith(f"{topics.xact.downloads_pending}:")

    replay(resources, instance, dlq="xact_downloads", ids=[unreadable["entry_id"]], dry_run=False, reason="look again")
    assert consume_all(topics.xact.downloads_pending)[-1].value() == garbage  # the exact bytes, once more
    statuses = {e["item_id"]: e["status"] for e in view(lake, "xact_downloads").to_dicts()}
    assert statuses[None] == "replayed" and list(statuses.values()).count("waiting") == 1


def test_replay_resets_the_retry_count_and_keeps_the_history(resources, topics, kafka, lake, instance, host, consume_all):
    url = host.url(f"files/exhausted/{uuid.uuid4().hex}.pdf")
    produce_events(kafka, topics.xact.events, [event_with(url)])
    for request in tick(xact_events_kafka_sensor, instance, resources).run_requests:
        execute(xact_events, request, resources, instance)
    (pending,) = consume_all(topics.xact.downloads_pending)
    task = parse_task(XactDownloadTask, pending).model_copy(update={"retry_count": 2})
    timeout = TaskFailure(FailureCategory.TRANSIENT, "timeout", "read timed out")
    dlq_topic, record = route_failure(
        task,
        timeout,
        retry_topics=[("r1", 3), ("r2", 6)],
        dlq_topic=topics.xact.downloads_dlq,
        carrier=None,
        consumer_group="test",
        run_id="test",
    )
    kafka.produce(dlq_topic, [record])
    refresh_views(resources, instance)
    (entry,) = view(lake, "xact_downloads").to_dicts()
    assert entry["retry_count"] == 2 and "retries exhausted" in entry["reason"]

    replay(resources, instance, dlq="xact_downloads", dry_run=False, reason="host back")

    replayed = json.loads(consume_all(topics.xact.downloads_pending)[-1].value())
    assert replayed["retry_count"] == 0 and replayed["attachment_url"] == url
    assert [a["code"] for a in replayed["history"]] == ["timeout"]
    for request in tick(xact_attachments_pending_sensor, instance, resources).run_requests:
        execute(xact_attachments, request, resources, instance)
    assert table_rows(lake, "xact_attachments")["attachment_url"].to_list() == [url]


def test_category_and_max_count_filters_pick_the_oldest_matching_entries(resources, topics, kafka, lake, instance, host):
    gone = [host.url(f"status/404/f{i}.pdf") for i in range(3)]
    produce_events(kafka, topics.xact.events, [event_with(*gone, host.url("status/401/locked.pdf"))])
    run_pipeline(resources, instance)
    categories = dict(view(lake, "xact_downloads").select("entry_id", "error_category").iter_rows())
    assert sorted(categories.values()) == ["auth"] + ["permanent"] * 3

    replay(resources, instance, dlq="xact_downloads", error_category="auth", dry_run=False, reason="token renewed")
    replay(resources, instance, dlq="xact_downloads", error_category="permanent", max_count=2, dry_run=False, reason="two")

    statuses = dict(view(lake, "xact_downloads").select("entry_id", "status").iter_rows())
    assert [statuses[e] for e, c in categories.items() if c == "auth"] == ["replayed"]
    assert sorted(statuses[e] for e, c in categories.items() if c == "permanent") == ["replayed", "replayed", "waiting"]
    assert audit(lake).sort("at")["entry_count"].to_list() == [1, 2]


def test_an_oversized_dead_letter_goes_by_claim_check_and_replays_its_exact_bytes(
    resources, topics, kafka, lake, files, instance, consume_all
):
    """The DLQ topic holds 1 MB (Event Hubs' limit) while the source took a 1.5 MB record."""
    admin = kafka.admin()
    limits = {topics.xact.events: str(4 * 1024 * 1024), topics.xact.events_dlq: str(1024 * 1024)}
    entries = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            t,
            incremental_configs=[ConfigEntry("max.message.bytes", v, incremental_operation=AlterConfigOpType.SET)],
        )
        for t, v in limits.items()
    ]
    for future in admin.incremental_alter_configs(entries).values():
        future.result(30)
    original = b"\x00not json" * 150_000
    kafka.produce(topics.xact.events, [OutRecord(original, b"k1", [("traceparent", b"00-abc")])])
    run_pipeline(resources, instance)

    (dead,) = consume_all(topics.xact.events_dlq)
    claim = json.loads(dead.value())["claim_check"]
    assert claim["size"] == len(original) and claim["sha256"] == hashlib.sha256(original).hexdigest()
    (entry,) = view(lake, "xact_events").to_dicts()
    assert entry["error_category"] == "malformed" and len(entry["payload"]) < 1024

    assert replay(resources, instance, dlq="xact_events", dry_run=False, reason="claim check").success
    replayed = consume_all(topics.xact.events)[-1]
    assert replayed.value() == original and replayed.key() == b"k1"
    assert ("traceparent", b"00-abc") in replayed.headers()


def test_a_replay_that_died_midway_is_finished_by_its_reexecution_and_nothing_else_is_sent_again(
    resources, topics, kafka, lake, instance, host, consume_all
):
    produce_events(kafka, topics.xact.events, [event_with(host.url("status/404/a.pdf"), host.url("status/404/b.pdf"))])
    run_pipeline(resources, instance)
    first, second = view(lake, "xact_downloads").sort("entry_id")["entry_id"].to_list()
    # A first run marked both entries replaying, sent one and died (the second stays marked).
    root = str(uuid.uuid4())
    spec = DLQ_VIEWS["xact_downloads"]
    dying = Operation("replay", "xact_downloads", DlqFilter(ids=(first, second)), "host back", root, "test", operation_id=root)
    lake.load(spec.table).update(updates={"status": "'replaying'", "status_run_id": f"'{root}'"}, predicate="true")
    lake.load(spec.table).update(updates={"status": "'replayed'"}, predicate=f"entry_id = '{first}'")
    pending_before = len(consume_all(topics.xact.downloads_pending))

    result = replay_entries(
        lake,
        {"kafka": kafka, "source_kafka": kafka},
        resources["files"],
        SimpleNamespace(**resources),
        spec,
        replace(dying, run_id="re-executed", filters=DlqFilter()),
    )

    assert result.entry_ids == [second]  # only what the dead run left unfinished
    assert len(consume_all(topics.xact.downloads_pending)) == pending_before + 1
    assert set(view(lake, "xact_downloads")["status"]) == {"replayed"}


class Recording:
    """A cluster that only records what it was asked to produce."""

    def __init__(self):
        self.sent: list[str] = []

    def produce(self, topic, records):
        self.sent += [topic] * len(list(records))
        return len(self.sent)


def test_event_dead_letters_replay_to_the_source_cluster_and_task_dead_letters_to_the_pipeline(
    resources, topics, kafka, lake, instance, host
):
    produce_raw(kafka, topics.xact.events, MALFORMED_MESSAGES[:1])
    produce_events(kafka, topics.xact.events, [event_with(host.url("status/404/c.pdf"))])
    run_pipeline(resources, instance)
    source, pipeline_cluster = Recording(), Recording()
    clusters = {"source_kafka": source, "kafka": pipeline_cluster}

    for name in ("xact_events", "xact_downloads"):
        op = Operation("replay", name, DlqFilter(), "where to", f"op-{name}", "test")
        replay_entries(lake, clusters, resources["files"], SimpleNamespace(**resources), DLQ_VIEWS[name], op)  # type: ignore[arg-type]

    assert source.sent == [topics.xact.events]
    assert pipeline_cluster.sent == [topics.xact.downloads_pending]


@pytest.mark.parametrize(
    "config, complaint",
    [
        ({"seen_after": "2026-12-01T08:00:00"}, "time zone"),
        ({"seen_before": "yesterday"}, "seen_before"),
        ({"max_count": -1}, "max_count"),
        ({"max_count": 0}, "max_count"),
        ({"statuses": ["lost"]}, "unknown statuses"),
    ],
)
def test_filters_that_would_mislead_are_refused_before_anything_runs(resources, lake, instance, config, complaint):
    result = replay(resources, instance, dlq="xact_downloads", dry_run=False, **config)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert complaint in failure.step_failure_data.error.to_string()
    assert audit(lake).height == 0  # refused before it touched anything


@pytest.mark.parametrize(
    "argv, complaint", [(["list", "--after", "2026-12-01T08:00:00"], "time zone"), (["list", "--max", "-3"], "between 1 and")]
)
def test_the_cli_refuses_a_naive_time_and_a_negative_count(capsys, argv, complaint):
    with pytest.raises(SystemExit):
        dlq_cli.main(argv)
    assert complaint in capsys.readouterr().err
