"""ClaimX end to end: real Kafka, real Delta, the ClaimX API double and the media host on
127.0.0.1. Events flow through claimx_events, the enrichment into the entity tables, and the
media downloads into claimx_attachments."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from pipeline_defs.defs.claimx import enrichment as enrichment_module
from pipeline_defs.defs.claimx.api import ClaimXApiResource
from pipeline_defs.defs.claimx.assets import claimx_attachments, claimx_entities, claimx_events
from pipeline_defs.defs.claimx.enrichment import EnrichmentSink
from pipeline_defs.defs.claimx.entities import ENTITY_TABLES
from pipeline_defs.defs.claimx.models import ClaimXDownloadTask
from pipeline_defs.defs.claimx.sensors import (
    claimx_attachments_pending_sensor,
    claimx_enrichment_pending_sensor,
    claimx_enrichment_retry_sensor,
    claimx_events_kafka_sensor,
)
from pipeline_defs.domains import DLQ_DOMAIN
from pipeline_defs.lib.delta.entities import merge_entities
from pipeline_defs.lib.dlq.records import DeadLetterTopic
from pipeline_defs.lib.ingest.consume import consume_ranges
from pipeline_defs.lib.ingest.retries import Retries
from pipeline_defs.lib.ingest.sink import BatchContext, IngestMode, IngestReport
from pipeline_defs.lib.ingest.tasks import SourceEvent
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import OutRecord, Topic
from pipeline_defs_tests.support.kafka import execute, headers_of, location, metadata_of, produce_raw, table_rows, tick
from pipeline_sim.claimx_events import MALFORMED_CLAIMX_MESSAGES, MIX, ClaimXEventSource
from pipeline_sim.events import encode

ENTITY_NAMES = [t.name for t in ENTITY_TABLES]


def produce(kafka, topics, events: list[dict]) -> None:
    kafka.produce(topics.claimx.events, (OutRecord(encode(e), str(e["project_id"]).encode()) for e in events))


def run_step(sensor, asset, resources, instance, cursor=None):
    data = tick(sensor, instance, resources, cursor)
    return data.cursor or cursor, [execute(asset, r, resources, instance) for r in data.run_requests]


def run_pipeline(resources, instance) -> list[dg.ExecuteInProcessResult]:
    """One tick of each stage, in order: events, enrichment, media downloads."""
    run_step(claimx_events_kafka_sensor, claimx_events, resources, instance)
    _, enrichments = run_step(claimx_enrichment_pending_sensor, claimx_entities, resources, instance)
    run_step(claimx_attachments_pending_sensor, claimx_attachments, resources, instance)
    return enrichments


def rows(lake, table: str) -> pl.DataFrame:
    return table_rows(lake, table)


def log(lake) -> pl.DataFrame:
    return rows(lake, "claimx_enrichment_log")


def materialized(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"{asset} not materialized")


def one_of_each(source: ClaimXEventSource) -> list[dict]:
    created = source.event("PROJECT_CREATED")
    project = str(created["project_id"])
    return [created] + [source.event(t, project) for t in MIX if t != "PROJECT_CREATED"]


def test_all_nine_event_types_land_in_the_right_tables(resources, topics, kafka, lake, files, instance, claimx_world):
    source = ClaimXEventSource(claimx_world, random.Random(3))
    events = one_of_each(source)
    project = str(events[0]["project_id"])
    produce(kafka, topics, events)

    (enrichment,) = run_pipeline(resources, instance)

    assert sorted(rows(lake, "claimx_events")["event_type"].to_list()) == sorted(MIX)
    outcomes = log(lake)
    assert outcomes.height == 9 and set(outcomes["outcome"]) == {"enriched"}
    by_type = dict(zip(outcomes["event_type"].to_list(), outcomes["tables"].to_list()))
    assert by_type["PROJECT_CREATED"] == [
        "claimx_contacts",
        "claimx_external_links",
        "claimx_projects",
        "claimx_task_templates",
        "claimx_tasks",
    ]
    assert by_type["PROJECT_FILE_ADDED"] == ["claimx_media"]
    assert by_type["VIDEO_COLLABORATION_COMPLETED"] == ["claimx_video_collab"]

    (project_row,) = rows(lake, "claimx_projects").to_dicts()
    assert project_row["project_id"] == project and project_row["master_file_name"].startswith(f"MFN-{project}")
    contacts = rows(lake, "claimx_contacts")
    assert dict(zip(contacts["role"], contacts["invite_status"])) == {"POLICYHOLDER": "JOINED", "ADJUSTER": "JOINED"}
    tasks = rows(lake, "claimx_tasks")
    assert sorted(tasks["status"]) == ["ASSIGNED", "COMPLETED"]  # the project's first task, and the one assigned then completed
    templates = rows(lake, "claimx_task_templates")
    assert set(zip(tasks["template_id"], tasks["project_id"])) <= set(zip(templates["template_id"], templates["project_id"]))
    links = rows(lake, "claimx_external_links")
    assert set(links["link_host"]) == {"customer.claimx.example"} and "url" not in links.columns
    assert rows(lake, "claimx_video_collab")["status"].to_list() == ["COMPLETED"]

    (media,) = rows(lake, "claimx_media").to_dicts()
    file_event = next(e for e in events if e["event_type"] == "PROJECT_FILE_ADDED")
    assert media["media_id"] == file_event["media_id"] and "download_url" not in media
    (stored,) = rows(lake, "claimx_attachments").to_dicts()
    assert stored["media_id"] == media["media_id"]
    assert stored["blob_path"] == f"claimx/{project}/media/{media['media_id']}_{media['file_name']}"
    assert (Path(files.storage.files_root) / stored["blob_path"]).stat().st_size == stored["size_bytes"]

    checks = {(c.asset_key.path[-1], c.check_name): c.passed for c in enrichment.get_asset_check_evaluations()}
    assert checks and all(checks.values()), checks
    assert materialized(enrichment, "claimx_projects")["rows_inserted"] == 1


def test_replaying_the_same_events_leaves_the_tables_unchanged(
    resources, topics, kafka, lake, instance, claimx_world, consume_all
):
    source = ClaimXEventSource(claimx_world, random.Random(5))
    events = one_of_each(source) + [source.event() for _ in range(20)]
    produce(kafka, topics, events)
    data = tick(claimx_events_kafka_sensor, instance, resources)
    for request in data.run_requests:
        execute(claimx_events, request, resources, instance)
    enrichment_requests = tick(claimx_enrichment_pending_sensor, instance, resources).run_requests
    for request in enrichment_requests:
        execute(claimx_entities, request, resources, instance)
    before = {name: rows(lake, name) for name in [*ENTITY_NAMES, "claimx_enrichment_log"]}
    downloads_before = len(consume_all(topics.claimx.downloads_pending))

    for request in enrichment_requests:  # the same runs again: watermarks make them no-ops
        again = execute(claimx_entities, request, resources, instance)
        assert metadata_of_log(again)["rows_written"] == 0
    produce(kafka, topics, events)  # the source sends everything twice: deduplicated by event_id
    for request in tick(claimx_events_kafka_sensor, instance, resources, data.cursor).run_requests:
        assert metadata_of(execute(claimx_events, request, resources, instance))["duplicates_skipped"] == len(events)
    today = datetime.now(UTC).date().isoformat()
    backfill = dg.materialize([claimx_entities], partition_key=today, resources=resources, instance=instance)

    for name, earlier in before.items():
        assert rows(lake, name).sort(earlier.columns[0]).equals(earlier.sort(earlier.columns[0])), name
    assert materialized(backfill, "claimx_enrichment_log")["already_enriched"] == len(events)
    assert len(consume_all(topics.claimx.downloads_pending)) == downloads_before
    assert consume_all(topics.claimx.enrichment_dlq) == []


def metadata_of_log(result: dg.ExecuteInProcessResult) -> dict:
    return materialized(result, "claimx_enrichment_log")


def test_a_project_the_api_does_not_know_is_dead_lettered_with_its_reason(
    resources, topics, kafka, lake, instance, claimx_world, claimx_api_double, consume_all
):
    source = ClaimXEventSource(claimx_world, random.Random(7))
    good = one_of_each(source)
    gone = source.event("PROJECT_CREATED")
    missing = str(gone["project_id"])
    orphans = [gone, source.event("PROJECT_FILE_ADDED", missing), source.event("CUSTOM_TASK_ASSIGNED", missing)]
    claimx_api_double.not_found(missing)
    produce(kafka, topics, good + orphans)

    (enrichment,) = run_pipeline(resources, instance)

    dead = [(json.loads(m.value()), headers_of(m)) for m in consume_all(topics.claimx.enrichment_dlq)]
    assert sorted(d["task"]["event_id"] for d, _ in dead) == sorted(e["event_id"] for e in orphans)
    for payload, headers in dead:
        assert payload["error_category"] == headers["__dlq.errors.category"] == "permanent"
        assert payload["error_code"] == "not_found" and f"project {missing} not found" in payload["final_error"]
    outcomes = dict(zip(log(lake)["event_id"], log(lake)["outcome"]))
    assert {outcomes[e["event_id"]] for e in orphans} == {"dead_lettered"}
    assert {outcomes[e["event_id"]] for e in good} == {"enriched"}
    assert missing not in rows(lake, "claimx_projects")["project_id"].to_list()
    assert materialized(enrichment, "claimx_enrichment_log")["enrichment_dead_lettered"] == 3
    assert all(c.passed for c in enrichment.get_asset_check_evaluations())


def test_a_503_storm_opens_the_circuit_loses_nothing_and_everything_lands_after_recovery(
    resources, topics, kafka, lake, instance, claimx_world, claimx_api_double, claimx_api, consume_all
):
    source = ClaimXEventSource(claimx_world, random.Random(11))
    events = one_of_each(source) + [source.event() for _ in range(30)]
    produce(kafka, topics, events)
    run_step(claimx_events_kafka_sensor, claimx_events, resources, instance)
    claimx_api_double.storm(503)

    _, (stormy,) = run_step(claimx_enrichment_pending_sensor, claimx_entities, resources, instance)

    metadata = materialized(stormy, "claimx_enrichment_log")
    assert metadata["events_enriched"] == 0 and metadata["retries_scheduled"] == len(events)
    assert metadata["circuit_open"] > 0 and "closed -> open" in metadata["circuit_transitions"]
    projects = {str(e["project_id"]) for e in events}
    # at most every project's pre-flight call, each tried max_attempts times, before the breaker opened
    assert claimx_api_double.total_requests <= claimx_api.settings.max_attempts * len(projects) < len(events)
    assert set(log(lake)["outcome"]) == {"retrying"}

    claimx_api_double.calm()
    time.sleep(3.2)  # the first retry topic holds tasks for 3 s
    _, (recovered,) = run_step(claimx_enrichment_retry_sensor, claimx_entities, resources, instance)

    assert materialized(recovered, "claimx_enrichment_log")["events_enriched"] == len(events)
    assert set(log(lake)["outcome"]) == {"enriched"} and log(lake).height == len(events)
    assert consume_all(topics.claimx.enrichment_dlq) == []


def test_an_expired_media_link_is_refreshed_and_downloaded(
    resources, topics, kafka, lake, instance, claimx_world, claimx_api_double, media_host
):
    source = ClaimXEventSource(claimx_world, random.Random(13))
    created = source.event("PROJECT_CREATED")
    project = str(created["project_id"])
    added = source.event("PROJECT_FILE_ADDED", project)
    claimx_api_double.expire_links({added["media_id"]})  # enrichment hands out a link already past its expiry
    produce(kafka, topics, [created, added])
    run_step(claimx_events_kafka_sensor, claimx_events, resources, instance)
    run_step(claimx_enrichment_pending_sensor, claimx_entities, resources, instance)
    # and a task whose host says the link expired (S3's 403 "Request has expired")
    refused = ClaimXDownloadTask(
        media_id=claimx_world.add_media(project),
        project_id=project,
        download_url=media_host.url("expired/basement_0.jpg"),
        file_name="basement_0.jpg",
        source=SourceEvent(topic=topics.claimx.events, partition=0, offset=0, ingestion_date=datetime.now(UTC).date()),
    )
    kafka.produce(topics.claimx.downloads_pending, [OutRecord(refused.encode(), refused.message_key)])
    media_calls = claimx_api_double.requests["project_media"]

    _, results = run_step(claimx_attachments_pending_sensor, claimx_attachments, resources, instance)

    stored = rows(lake, "claimx_attachments")
    assert sorted(stored["media_id"]) == sorted([added["media_id"], refused.media_id])
    assert sum(metadata_of(r)["urls_refreshed"] for r in results) == 2
    # one listing for the link already past its expiry, one after the host refused the other
    assert claimx_api_double.requests["project_media"] - media_calls == 2


def test_ten_file_events_of_one_project_cost_one_media_call(
    resources, topics, kafka, lake, instance, claimx_world, claimx_api_double
):
    source = ClaimXEventSource(claimx_world, random.Random(17))
    created = source.event("PROJECT_CREATED")
    project = str(created["project_id"])
    produce(kafka, topics, [created])
    run_pipeline(resources, instance)
    calls = claimx_api_double.requests.copy()
    produce(kafka, topics, [source.event("PROJECT_FILE_ADDED", project) for _ in range(10)])

    run_step(claimx_events_kafka_sensor, claimx_events, resources, instance)
    _, (enrichment,) = run_step(claimx_enrichment_pending_sensor, claimx_entities, resources, instance)

    assert claimx_api_double.requests["project_media"] - calls["project_media"] == 1
    assert claimx_api_double.requests["project"] == calls["project"]  # known project: no pre-flight call
    metadata = materialized(enrichment, "claimx_enrichment_log")
    assert metadata["api_calls"] == 1 and metadata["api_cache_hits"] == 9
    assert rows(lake, "claimx_media").filter(pl.col("project_id") == project).height == 10


def test_a_file_event_of_an_unseen_project_fetches_the_project_first(resources, topics, kafka, lake, instance, claimx_world):
    project = claimx_world.new_project()
    added = ClaimXEventSource(claimx_world, random.Random(19)).event("PROJECT_FILE_ADDED", project)
    produce(kafka, topics, [added])

    (enrichment,) = run_pipeline(resources, instance)

    (project_row,) = rows(lake, "claimx_projects").to_dicts()
    assert project_row["project_id"] == project and project_row["source_event_type"] == "preflight"
    assert materialized(enrichment, "claimx_enrichment_log")["projects_preflight_fetched"] == 1
    assert rows(lake, "claimx_media")["project_id"].to_list() == [project]


def test_two_overlapping_enrichment_runs_merging_into_the_same_tables_both_succeed(
    resources, topics, kafka, lake, instance, claimx_world, claimx_api, ingest_config, files, monkeypatch
):
    """Two run processes enriching at once (the pool serialises them in deployment; this is
    what delta-rs' conflict check and the merge retries must survive without it)."""
    source = ClaimXEventSource(claimx_world, random.Random(23), active_projects=3)
    events = [source.event() for _ in range(120)]
    produce(kafka, topics, events)
    run_step(claimx_events_kafka_sensor, claimx_events, resources, instance)
    pending = topics.claimx.enrichment_pending
    ranges = [OffsetRange(pending, p, s.low, s.high) for p, s in kafka.partition_states(pending, 10).items()]
    halves = [[r for r in ranges if r.partition % 2 == 0], [r for r in ranges if r.partition % 2 == 1]]
    reports: list = [None, None]
    sinks: list = [None, None]
    start = threading.Barrier(2)
    together = threading.Barrier(2)
    first_merge_done: set[int] = set()

    def merge_together(delta, table, rows_, run_id):  # both runs' first merges read one snapshot
        if rows_ and threading.get_ident() not in first_merge_done:
            first_merge_done.add(threading.get_ident())
            together.wait(30)
        return merge_entities(delta, table, rows_, run_id)

    monkeypatch.setattr(enrichment_module, "merge_entities", merge_together)

    def run(i: int) -> None:
        sink = sinks[i] = EnrichmentSink(
            api=claimx_api,
            lake=lake,
            retries=Retries(
                kafka, ingest_config.retry_topics(pending), DeadLetterTopic(kafka, topics.claimx.enrichment_dlq, files)
            ),
            downloads=Topic(kafka, topics.claimx.downloads_pending),
        )
        context = BatchContext(
            group_id=ingest_config.consumer_group("claimx_entities"),
            run_id=f"overlap-{i}",
            ingestion_date=datetime.now(UTC).date(),
            mode=IngestMode.STREAM,
            report=IngestReport(),
        )
        start.wait()
        reports[i] = consume_ranges(halves[i], sink=sink, source=kafka, lake=lake, context=context, batch_size=20)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(r is not None for r in reports), "a run failed"
    assert sum(stats.conflicts for sink in sinks for stats in sink.merged.values()) >= 1  # they did collide
    assert sum(r.counts["events_enriched"] for r in reports) == len(events)
    assert log(lake).height == len(events) and set(log(lake)["outcome"]) == {"enriched"}
    for table in ENTITY_TABLES:
        frame = rows(lake, table.name)
        assert frame.height == frame.select(table.keys).n_unique(), table.name


def test_unknown_event_types_and_invalid_messages_go_to_the_dlq_with_their_reason(
    resources, topics, kafka, lake, instance, claimx_world, consume_all
):
    source = ClaimXEventSource(claimx_world, random.Random(29))
    good = one_of_each(source)
    produce(kafka, topics, good)
    produce_raw(kafka, topics.claimx.events, MALFORMED_CLAIMX_MESSAGES)

    run_step(claimx_events_kafka_sensor, claimx_events, resources, instance)

    assert rows(lake, "claimx_events").height == len(good)
    dead = {m.value(): headers_of(m) for m in consume_all(topics.claimx.events_dlq)}
    assert set(dead) == set(MALFORMED_CLAIMX_MESSAGES)
    reasons = {value: h["__dlq.errors.reason"] for value, h in dead.items()}
    assert "event_type" in reasons[MALFORMED_CLAIMX_MESSAGES[1]]
    assert "media_id is required for PROJECT_FILE_ADDED" in reasons[MALFORMED_CLAIMX_MESSAGES[2]]
    assert "project_id" in reasons[MALFORMED_CLAIMX_MESSAGES[3]]
    assert dead[MALFORMED_CLAIMX_MESSAGES[0]]["__dlq.errors.category"] == "malformed"


def test_dead_lettered_enrichments_show_in_their_dlq_view_and_replay_once_fixed(
    resources, topics, kafka, lake, instance, claimx_world, claimx_api_double
):
    source = ClaimXEventSource(claimx_world, random.Random(31))
    created = source.event("PROJECT_CREATED")
    project = str(created["project_id"])
    claimx_api_double.not_found(project)
    produce(kafka, topics, [created])
    run_pipeline(resources, instance)
    view_asset = next(
        a
        for a in DLQ_DOMAIN.defs.assets or ()
        if isinstance(a, dg.AssetsDefinition) and a.key.path[-1] == "dlq_claimx_enrichment"
    )
    view_sensor = next(s for s in DLQ_DOMAIN.defs.sensors or () if s.name == "dlq_claimx_enrichment_sensor")
    for request in tick(view_sensor, instance, resources).run_requests:
        dg.materialize([view_asset], tags=request.tags, resources=resources, instance=instance)
    (entry,) = rows(lake, "dlq_claimx_enrichment").to_dicts()
    assert entry["item_id"] == created["event_id"] and entry["error_category"] == "permanent"
    assert f"project {project} not found" in entry["reason"]

    claimx_api_double.restore(project)  # the project reappears in ClaimX
    replayed = (
        location(resources)
        .resolve_job_def("dlq_replay_job")
        .execute_in_process(
            run_config={
                "ops": {
                    "replay_dlq_entries": {"config": {"dlq": "claimx_enrichment", "dry_run": False, "reason": "project restored"}}
                }
            },
            resources=resources,
            instance=instance,
        )
    )
    assert replayed.success
    run_step(claimx_enrichment_pending_sensor, claimx_entities, resources, instance)  # plans from the committed offsets

    assert rows(lake, "claimx_projects")["project_id"].to_list() == [project]
    assert dict(zip(log(lake)["event_id"], log(lake)["outcome"])) == {created["event_id"]: "enriched"}


def test_a_backfill_enriches_and_downloads_what_the_stream_missed(
    resources, topics, kafka, lake, files, instance, claimx_world, claimx_api_double
):
    source = ClaimXEventSource(claimx_world, random.Random(37))
    events = one_of_each(source) + [source.event("PROJECT_FILE_ADDED") for _ in range(3)]
    produce(kafka, topics, events)
    run_step(claimx_events_kafka_sensor, claimx_events, resources, instance)  # the enrichment topic is never worked: a gap
    today = datetime.now(UTC).date().isoformat()

    entities = dg.materialize([claimx_entities], partition_key=today, resources=resources, instance=instance)
    media_calls = claimx_api_double.requests["project_media"]
    media = dg.materialize([claimx_attachments], partition_key=today, resources=resources, instance=instance)

    assert materialized(entities, "claimx_enrichment_log")["mode"] == "backfill"
    assert set(log(lake)["outcome"]) == {"enriched"} and log(lake).height == len(events)
    file_events = [e for e in events if e["event_type"] == "PROJECT_FILE_ADDED"]
    stored = rows(lake, "claimx_attachments")
    assert sorted(stored["media_id"]) == sorted(e["media_id"] for e in file_events)
    assert metadata_of(media)["urls_refreshed"] == len(file_events)  # a backfill's tasks carry no link
    assert claimx_api_double.requests["project_media"] - media_calls == len({str(e["project_id"]) for e in file_events})
    assert all((Path(files.storage.files_root) / p).exists() for p in stored["blob_path"])


def test_a_refused_api_token_fails_the_run_and_dead_letters_nothing(
    resources, topics, kafka, lake, instance, claimx_world, claimx_api, consume_all
):
    produce(kafka, topics, one_of_each(ClaimXEventSource(claimx_world, random.Random(41))))
    run_step(claimx_events_kafka_sensor, claimx_events, resources, instance)
    (request,) = tick(claimx_enrichment_pending_sensor, instance, resources).run_requests
    revoked = {**resources, "claimx_api": ClaimXApiResource(settings=claimx_api.settings, token="revoked")}

    failed = dg.materialize(
        [claimx_entities],
        partition_key=request.partition_key,
        tags=request.tags,
        resources=revoked,
        instance=instance,
        raise_on_error=False,
    )

    assert not failed.success
    assert "refused the token" in str(failed.get_step_failure_events()[0].step_failure_data.error)
    assert consume_all(topics.claimx.enrichment_dlq) == [] and log(lake).height == 0
    assert execute(claimx_entities, request, resources, instance).success  # the same range, once the token is fixed
    assert set(log(lake)["outcome"]) == {"enriched"}


def test_presigned_links_never_reach_the_dlq(resources, topics, kafka, lake, instance, media_host, consume_all):
    signed = media_host.url("status/404/photo.jpg?X-Amz-Date=20990101T000000Z&X-Amz-Expires=60&X-Amz-Signature=s3cr3t")
    task = ClaimXDownloadTask(
        media_id="9-m1",
        project_id="9",
        download_url=signed,
        file_name="photo.jpg",
        source=SourceEvent(topic=topics.claimx.events, partition=0, offset=0, ingestion_date=datetime.now(UTC).date()),
    )
    kafka.produce(topics.claimx.downloads_pending, [OutRecord(task.encode(), task.message_key)])

    run_step(claimx_attachments_pending_sensor, claimx_attachments, resources, instance)
    view_asset = next(
        a for a in DLQ_DOMAIN.defs.assets or () if isinstance(a, dg.AssetsDefinition) and a.key.path[-1] == "dlq_claimx_downloads"
    )
    view_sensor = next(s for s in DLQ_DOMAIN.defs.sensors or () if s.name == "dlq_claimx_downloads_sensor")
    for request in tick(view_sensor, instance, resources).run_requests:
        dg.materialize([view_asset], tags=request.tags, resources=resources, instance=instance)

    (dead,) = consume_all(topics.claimx.downloads_dlq)
    payload = json.loads(dead.value())
    assert payload["error_code"] == "http_404" and payload["task"]["download_url"] == ""
    assert b"s3cr3t" not in dead.value() and all(b"s3cr3t" not in (v or b"") for _, v in dead.headers())
    (entry,) = rows(lake, "dlq_claimx_downloads").to_dicts()
    assert entry["item_id"] == "9-m1" and b"s3cr3t" not in entry["payload"]


def test_an_api_answer_that_cannot_be_used_is_dead_lettered_and_the_rest_goes_on(
    resources, topics, kafka, lake, instance, claimx_world, claimx_api_double, consume_all
):
    source = ClaimXEventSource(claimx_world, random.Random(43))
    good = one_of_each(source)
    broken = source.event("PROJECT_CREATED")
    claimx_api_double.garble(str(broken["project_id"]))
    produce(kafka, topics, [*good, broken])

    (enrichment,) = run_pipeline(resources, instance)

    (dead,) = [json.loads(m.value()) for m in consume_all(topics.claimx.enrichment_dlq)]
    assert dead["task"]["event_id"] == broken["event_id"] and dead["error_code"] == "bad_response"
    assert {o for e, o in zip(log(lake)["event_id"], log(lake)["outcome"]) if e != broken["event_id"]} == {"enriched"}
    assert enrichment.success
