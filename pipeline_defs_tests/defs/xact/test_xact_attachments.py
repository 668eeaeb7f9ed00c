"""xact_attachments end to end: real Kafka, a real HTTP host on 127.0.0.1, the local store or
Azurite, Delta; events flow through xact_events into download tasks, retry topics and DLQ."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from azure.storage.blob import BlobServiceClient
from deltalake import write_deltalake

from pipeline_defs.defs.xact.assets import xact_attachments, xact_events
from pipeline_defs.defs.xact.sensors import (
    xact_attachments_pending_sensor,
    xact_attachments_retry_sensor,
    xact_events_kafka_sensor,
)
from pipeline_defs.lib.attachments import inventory as attachments_module
from pipeline_defs.lib.attachments.file_store import FileStoreResource
from pipeline_defs.lib.attachments.url_safety import url_digest
from pipeline_defs.lib.delta.checks import RunScope, blobs_match_inventory, keys_unique
from pipeline_defs.lib.settings import StorageSettings
from pipeline_defs_tests.support.kafka import execute, headers_of, metadata_of, produce_events, table_rows, tick
from pipeline_defs_tests.support.stack import TEST_STACK
from pipeline_sim.attachment_host import AttachmentHost, file_body
from pipeline_sim.events import xact_event

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def host():
    server = AttachmentHost(host_name="attachments.test", file_size=32 * 1024).start_in_thread()
    yield server
    server.stop_thread()


def event_with(*urls: str) -> dict:
    event = xact_event(random.Random(), "http://unused")
    return {**event, "trace_id": f"T-{uuid.uuid4().hex[:10]}", "event_subtype": "documentsReceived", "attachments": list(urls)}


def ingest_events(resources, instance):
    data = tick(xact_events_kafka_sensor, instance, resources)
    for request in data.run_requests:
        execute(xact_events, request, resources, instance)


def run_sensor(sensor, resources, instance, cursor=None):
    """One tick of an attachments sensor and its runs; returns (cursor, run results)."""
    data = tick(sensor, instance, resources, cursor)
    results = [execute(xact_attachments, r, resources, instance) for r in data.run_requests]
    return data.cursor or cursor, results


def inventory(lake):
    return table_rows(lake, "xact_attachments")


def dead_letters(consume_all, topics):
    return [(json.loads(m.value()), headers_of(m)) for m in consume_all(topics.xact.downloads_dlq)]


def test_a_good_attachment_is_uploaded_and_recorded_once(resources, topics, kafka, lake, files, instance, host):
    url = host.url("files/T/report.pdf")
    event = event_with(url)
    produce_events(kafka, topics.xact.events, [event])
    ingest_events(resources, instance)
    (request,) = tick(xact_attachments_pending_sensor, instance, resources).run_requests

    result = execute(xact_attachments, request, resources, instance)

    rows = inventory(lake)
    assert rows.height == 1
    row = rows.row(0, named=True)
    body, _ = file_body("/files/T/report.pdf", 32 * 1024)
    assert row["trace_id"] == event["trace_id"] and row["attachment_url"] == url
    assert (
        row["blob_path"]
        == f"xact/documentsReceived/{event['trace_id']}/{event['payload']['assignmentId']}_{url_digest(url)}_report.pdf"
    )
    assert row["size_bytes"] == len(body) and row["content_type"] == "application/pdf"
    assert row["attempt_count"] == 1 and row["event_topic"] == topics.xact.events
    assert (Path(files.storage.files_root) / row["blob_path"]).read_bytes() == body
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"inventory_key_unique": True, "blobs_exist_with_recorded_size": True, "failed_attachment_ratio": True}
    assert metadata_of(result)["files_stored"] == 1 and metadata_of(result)["bytes_stored"] == len(body)

    again = execute(xact_attachments, request, resources, instance)
    assert metadata_of(again)["rows_written"] == 0 and inventory(lake).height == 1

    # The checks see damage done behind the pipeline's back: a lost blob, a duplicated row.
    (Path(files.storage.files_root) / row["blob_path"]).unlink()
    lost = blobs_match_inventory(lake, files, "xact_attachments", RunScope(result.run_id), "blobs_exist_with_recorded_size")
    assert not lost.passed and lost.metadata["missing_or_wrong_size"].value == [row["blob_path"]]
    write_deltalake(
        lake.table_uri("xact_attachments"), inventory(lake).to_arrow(), mode="append", storage_options=lake.storage_options()
    )
    doubled = keys_unique(
        lake, "xact_attachments", ["trace_id", "attachment_url"], RunScope(result.run_id), 1, "inventory_key_unique"
    )
    assert not doubled.passed and doubled.metadata["duplicated_keys"].value == 1


def test_permanent_failures_go_to_the_dlq_with_their_reason(resources, topics, kafka, lake, instance, host, consume_all):
    cases = {
        host.url("status/404/gone.pdf"): "http_404",
        host.url("as/text%2Fhtml/login.pdf"): "wrong_file_type",
        "http://10.0.0.5/files/a.pdf": "blocked_url",
        "http://169.254.169.254/latest/meta-data/creds.pdf": "blocked_url",
        host.url(f"redirect?to=http://localhost:{host.port}/files/T/x.pdf"): "blocked_redirect",
        "http://internal.test/files/a.pdf": "blocked_address",
        host.url("files/T/payload.exe"): "wrong_file_type",
    }
    ok = host.url("files/T/fine.pdf")
    produce_events(kafka, topics.xact.events, [event_with(ok, *cases)])
    ingest_events(resources, instance)

    _, (result,) = run_sensor(xact_attachments_pending_sensor, resources, instance)

    assert inventory(lake)["attachment_url"].to_list() == [ok]
    dead = dead_letters(consume_all, topics)
    assert {d["task"]["attachment_url"]: d["error_code"] for d, _ in dead} == cases
    for payload, headers in dead:
        assert payload["error_category"] == headers["__dlq.errors.category"] == "permanent"
        assert headers["__dlq.errors.topic"] == topics.xact.downloads_pending
        assert payload["task"]["history"][0]["code"] == payload["error_code"]
    metadata = metadata_of(result)
    assert metadata["failed_permanent"] == len(cases) and metadata["downloads_dead_lettered"] == len(cases)
    ratio = {c.check_name: c for c in result.get_asset_check_evaluations()}["failed_attachment_ratio"]
    assert not ratio.passed and ratio.severity == dg.AssetCheckSeverity.WARN


def test_503_then_200_lands_after_one_retry_pass(resources, topics, kafka, lake, instance, host, consume_all):
    url = host.url(f"flaky/1/{uuid.uuid4().hex}.pdf")
    produce_events(kafka, topics.xact.events, [event_with(url)])
    ingest_events(resources, instance)

    _, (first,) = run_sensor(xact_attachments_pending_sensor, resources, instance)
    assert metadata_of(first)["retries_scheduled"] == 1 and inventory(lake).height == 0
    cursor, early = run_sensor(xact_attachments_retry_sensor, resources, instance)
    assert early == []  # not due yet: the first retry topic holds tasks for 3 s
    time.sleep(3.2)
    _, (retried,) = run_sensor(xact_attachments_retry_sensor, resources, instance, cursor)

    rows = inventory(lake)
    assert rows["attachment_url"].to_list() == [url] and rows["attempt_count"].to_list() == [2]
    assert retried.dagster_run.tags["kafka/topic"].endswith(".retry.3s")
    assert dead_letters(consume_all, topics) == []


def test_a_read_timeout_retries_until_exhausted_then_dead_letters_with_history(
    resources, topics, kafka, lake, instance, host, consume_all
):
    url = host.url("slow/4/never.pdf")  # the test downloader gives up reading after 2 s
    produce_events(kafka, topics.xact.events, [event_with(url)])
    ingest_events(resources, instance)

    run_sensor(xact_attachments_pending_sensor, resources, instance)
    cursor = None
    deadline = time.monotonic() + 60
    while not dead_letters(consume_all, topics) and time.monotonic() < deadline:
        time.sleep(1)
        cursor, _ = run_sensor(xact_attachments_retry_sensor, resources, instance, cursor)

    ((payload, headers),) = dead_letters(consume_all, topics)
    assert payload["error_code"] == "timeout" and payload["error_category"] == "transient"
    assert [a["code"] for a in payload["task"]["history"]] == ["timeout"] * 3  # first try + 2 retries
    assert "retries exhausted" in headers["__dlq.errors.reason"]
    assert inventory(lake).height == 0


def test_retry_after_skips_to_a_retry_topic_that_waits_long_enough(resources, topics, kafka, instance, host, consume_all):
    produce_events(kafka, topics.xact.events, [event_with(host.url("throttle/4/a.pdf"))])
    ingest_events(resources, instance)

    run_sensor(xact_attachments_pending_sensor, resources, instance)

    waiting = consume_all(f"{topics.xact.downloads_pending}.retry.6s")
    assert len(waiting) == 1 and json.loads(waiting[0].value())["retry_count"] == 2
    assert consume_all(f"{topics.xact.downloads_pending}.retry.3s") == []


def test_path_traversal_in_a_file_name_stays_in_its_folder(resources, topics, kafka, lake, files, instance, host):
    url = host.url("files/..%2F..%2F..%2Fetc%2Fpasswd.pdf")
    event = event_with(url)
    produce_events(kafka, topics.xact.events, [event])
    ingest_events(resources, instance)

    run_sensor(xact_attachments_pending_sensor, resources, instance)

    (blob_path,) = inventory(lake)["blob_path"].to_list()
    assert (
        blob_path == f"xact/documentsReceived/{event['trace_id']}/{event['payload']['assignmentId']}_{url_digest(url)}_passwd.pdf"
    )
    assert ".." not in blob_path


def test_a_crash_between_upload_and_commit_is_repaired_by_the_rerun(
    resources, topics, kafka, lake, files, instance, host, monkeypatch
):
    urls = [host.url(f"files/crash/{i}.pdf") for i in range(3)]
    produce_events(kafka, topics.xact.events, [event_with(*urls)])
    ingest_events(resources, instance)
    data = tick(xact_attachments_pending_sensor, instance, resources)
    (request,) = data.run_requests

    def crash(*_args, **_kwargs):
        raise SystemExit("process killed after uploading, before the inventory commit")

    with monkeypatch.context() as patched:
        patched.setattr(attachments_module.AttachmentInventorySink, "write", crash)
        with pytest.raises(SystemExit):
            execute(xact_attachments, request, resources, instance)
    assert inventory(lake).height == 0  # uploaded, not recorded
    assert len(list(Path(files.storage.files_root).rglob("*.pdf"))) == 3

    rerun = execute(xact_attachments, request, resources, instance)

    rows = inventory(lake)
    assert sorted(rows["attachment_url"].to_list()) == sorted(urls) and rows.height == 3
    assert all(c.passed for c in rerun.get_asset_check_evaluations())


def test_a_backfill_of_a_day_downloads_what_the_inventory_lacks(resources, topics, kafka, lake, instance, host):
    urls = [host.url(f"files/backfill/{i}.pdf") for i in range(4)]
    produce_events(kafka, topics.xact.events, [event_with(u) for u in urls])
    ingest_events(resources, instance)  # the pending tasks are never worked: a gap
    today = datetime.now(UTC).date().isoformat()

    result = dg.materialize([xact_attachments], partition_key=today, resources=resources, instance=instance)

    assert sorted(inventory(lake)["attachment_url"].to_list()) == sorted(urls)
    assert metadata_of(result)["mode"] == "backfill"
    again = dg.materialize([xact_attachments], partition_key=today, resources=resources, instance=instance)
    assert metadata_of(again)["already_stored"] == 4 and inventory(lake).height == 4


def test_large_files_stream_to_azurite_with_flat_memory(resources, topics, kafka, lake, instance, host, test_stack):
    azurite_files = azurite_store(test_stack)
    size = 200 * 1024 * 1024
    produce_events(kafka, topics.xact.events, [event_with(host.url(f"big/{size}/site-video.pdf"))])
    ingest_events(resources, instance)
    request = tick(xact_attachments_pending_sensor, instance, resources).run_requests[0]
    baseline = _reset_peak_rss()

    result = execute(xact_attachments, request, {**resources, "files": azurite_files}, instance)

    growth = _peak_rss() - baseline
    print(f"peak RSS growth streaming {size / 2**20:.0f} MiB: {growth / 2**20:.1f} MiB")
    assert metadata_of(result)["bytes_stored"] == size
    assert inventory(lake)["size_bytes"].to_list() == [size]
    assert growth < size / 4, f"peak RSS grew {growth / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_storage_down_fails_the_step_and_the_retry_policy_recovers_without_duplicates(
    resources, topics, kafka, lake, instance, host, test_stack
):
    azurite_files = azurite_store(test_stack)
    urls = [host.url(f"files/outage/{i}.pdf") for i in range(3)]
    produce_events(kafka, topics.xact.events, [event_with(*urls)])
    ingest_events(resources, instance)
    (request,) = tick(xact_attachments_pending_sensor, instance, resources).run_requests

    def back_after_the_first_failure():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"kafka/topic": topics.xact.downloads_pending}))
            failures = [
                e
                for run in runs
                for e in instance.all_logs(run.run_id)
                if e.dagster_event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
            ]
            if failures:
                break
            time.sleep(0.5)
        TEST_STACK.run("up", "azurite")

    TEST_STACK.run("down", "azurite")
    comes_back = threading.Thread(target=back_after_the_first_failure)
    comes_back.start()
    try:
        result = execute(xact_attachments, request, {**resources, "files": azurite_files}, instance)
    finally:
        comes_back.join()

    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried, "the first attempt should have failed while Azurite was down"
    rows = inventory(lake)
    assert sorted(rows["attachment_url"].to_list()) == sorted(urls) and rows.height == 3
    assert all(c.passed for c in result.get_asset_check_evaluations())


def azurite_store(test_stack) -> FileStoreResource:
    endpoint = f"http://127.0.0.1:{test_stack.azurite_port}/devstoreaccount1"
    container = f"files-{uuid.uuid4().hex[:8]}"
    BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    ).create_container(container)
    return FileStoreResource(
        storage=StorageSettings(
            files_root=f"az://{container}/Files", azure_account_name="devstoreaccount1", azure_endpoint=endpoint
        ),
        azure_account_key=AZURITE_KEY,
    )


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def _reset_peak_rss() -> int:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets the peak resident set size to the current one
    return _peak_rss()


def test_a_failed_blocking_check_of_xact_events_holds_downloads_until_a_run_passes(
    resources, topics, kafka, lake, instance, host
):
    produce_events(kafka, topics.xact.events, [event_with(host.url("files/held/a.pdf"))])
    ingest_events(resources, instance)
    failed = dg.AssetCheckEvaluation(asset_key=dg.AssetKey("xact_events"), check_name="trace_id_unique", passed=False)
    instance.report_runless_asset_event(failed)

    held = tick(xact_attachments_pending_sensor, instance, resources)
    assert not held.run_requests and "blocking check xact_events:trace_id_unique failed" in held.skip_message

    produce_events(kafka, topics.xact.events, [event_with(host.url("files/held/b.pdf"))])
    ingest_events(resources, instance)  # its checks pass
    released = tick(xact_attachments_pending_sensor, instance, resources)
    for request in released.run_requests:
        execute(xact_attachments, request, resources, instance)
    assert inventory(lake).height == 2  # nothing was lost while held
