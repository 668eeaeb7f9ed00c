"""No message and no HTTP answer can stop a pipeline (real broker, real assets, real hosts on
127.0.0.1).

Hostile records go to ``events.raw``, ``claimx.events.raw``, ``downloads.pending``,
``claimx.enrichment.pending`` and ``claimx.downloads.pending``, each between two good ones on
the same partition, and hostile answers come from the attachment host and the ClaimX API
double. Every run succeeds; every offset is accounted for exactly once (a row, a duplicate
skipped, a retry task or a DLQ entry with its reason); the good records after the bad ones
land, attachments and media included.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Optional
from urllib.parse import quote

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from pipeline_defs.defs.claimx.assets import claimx_attachments, claimx_entities, claimx_events
from pipeline_defs.defs.claimx.sensors import (
    claimx_attachments_pending_sensor,
    claimx_enrichment_pending_sensor,
    claimx_events_kafka_sensor,
)
from pipeline_defs.defs.xact.assets import xact_attachments, xact_events
from pipeline_defs.defs.xact.sensors import (
    xact_attachments_pending_sensor,
    xact_attachments_stream_job,
    xact_events_kafka_sensor,
    xact_events_stream_job,
)
from pipeline_defs.lib.attachments.downloader import AttachmentHttpResource
from pipeline_defs.lib.dlq.records import CLAIM_CHECK_HEADER, error_headers
from pipeline_defs.lib.settings import DownloadSettings
from pipeline_defs_tests.support.kafka import location, run_all, streaming, table_rows
from pipeline_sim.attachment_host import AttachmentHost
from pipeline_sim.claimx_events import ClaimXEventSource
from pipeline_sim.events import encode, xact_event

NOW = datetime.now(UTC).isoformat()
BIG = 1_000_300  # below events.raw's limit: the source accepted it


def xevent(**fields) -> dict:
    event = xact_event(random.Random(), "http://unused", trace_id=f"T-{uuid.uuid4().hex[:12]}")
    return {**event, "attachments": [], **fields}


def raw(document) -> bytes:
    return json.dumps(document, allow_nan=True).encode()


@dataclass
class Record:
    """One record for a topic and what must become of it."""

    kind: str
    value: Optional[bytes] | Callable[[], bytes]  # a callable is read when the record is sent
    expect: str  # row | duplicate | dlq:<category>
    headers: list = field(default_factory=list)
    key: Optional[bytes] = b"key"
    reason: str = ""  # a fragment the DLQ reason must contain


def event_cases(host: AttachmentHost, sent: list[dict]) -> tuple[list[Record], dict[str, str]]:
    """Hostile events.raw records, and, for the events that land, what each attachment URL
    must become (stored, retry:<code> or dlq:<code>). ``sent`` holds the good events sent so far."""
    url = host.url
    urls: dict[str, str] = {}

    def good() -> dict:
        return xevent()

    def with_urls(**outcomes: str) -> bytes:
        urls.update(outcomes)
        return encode(xevent(attachments=list(outcomes)))

    presigned = (
        url("files/p/estimate.pdf")
        + "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
        + "A" * 600
        + "&X-Amz-Date=20261201T000000Z&X-Amz-Expires=604800&X-Amz-Security-Token="
        + "T" * 1200
        + "&X-Amz-Signature="
        + "f" * 64
    )
    cases = [
        Record("non-JSON bytes of 1,000,300", b"\x00garbage" * (BIG // 8), "dlq:malformed"),
        Record("non-JSON bytes of 2 MB (claim check)", b"\x01" * 2_000_000, "dlq:malformed"),
        Record("empty value", b"", "dlq:malformed"),
        Record("tombstone (no value)", None, "dlq:malformed"),
        Record("invalid UTF-8", b'{"trace_id": "\xff\xfe"}', "dlq:malformed"),
        Record("JSON array", b"[1, 2, 3]", "dlq:invalid"),
        Record("JSON number", b"42", "dlq:invalid"),
        Record("no trace_id", raw({k: v for k, v in xevent().items() if k != "trace_id"}), "dlq:invalid", reason="trace_id"),
        Record("trace_id an object", raw(xevent(trace_id={"a": 1})), "dlq:invalid", reason="trace_id"),
        Record(
            "timestamp year 10000 in UTC", raw(xevent(timestamp="9999-12-31T23:59:59-01:00")), "dlq:invalid", reason="timestamp"
        ),
        Record(
            "timestamp before year 1 in UTC",
            raw(xevent(timestamp="0001-01-01T00:00:00+01:00")),
            "dlq:invalid",
            reason="timestamp",
        ),
        Record("timestamp 1e308", raw(xevent(timestamp=1e308)), "dlq:invalid", reason="timestamp"),
        Record("timestamp offset +99:00", raw(xevent(timestamp="2026-01-01T00:00:00+99:00")), "dlq:invalid", reason="timestamp"),
        Record("NaN in payload", raw(xevent(payload={"amount": float("nan")})), "dlq:malformed"),
        Record("Infinity in payload", raw(xevent(payload={"amount": float("inf")})), "dlq:malformed"),
        Record(
            "1e400 in payload",
            encode(xevent()).replace(b'"payload":{', b'"payload":{"huge":1e400,'),
            "dlq:invalid",
            reason="payload",
        ),
        Record(
            "10^308 integer in payload", encode(xevent()).replace(b'"payload":{', b'"payload":{"n":1' + b"0" * 308 + b","), "row"
        ),
        Record(
            "nesting 10,000 deep",
            encode(xevent()).replace(b'"payload":{', b'"payload":{"deep":' + b"[" * 10_000 + b"]" * 10_000 + b","),
            "dlq:malformed",
        ),
        Record("1 MB string in payload", raw(xevent(payload={"notes": "n" * 1_000_000})), "row"),
        Record(
            "lone surrogate escape",
            encode(xevent()).replace(b'"source_system":"xn"', b'"source_system":"\\ud800"'),
            "dlq:malformed",
        ),
        Record("attachments a string", raw(xevent(attachments="https://x/y.pdf")), "dlq:invalid", reason="attachments"),
        Record("attachments numbers", raw(xevent(attachments=[1, 2])), "dlq:invalid", reason="attachments"),
        Record(
            "binary and oversized headers",
            encode(good()),
            "row",
            headers=[("x-bin", b"\xff\xfe\x00"), ("x-big", b"h" * 200_000), ("dup", b"1"), ("dup", b"2")],
        ),
        Record("no key", encode(good()), "row", key=None),
        Record("a resend of a good event", lambda: encode(sent[0]), "duplicate"),
        Record(
            "two attachments with one file name",
            with_urls(**{url("files/a/report.pdf"): "stored", url("files/b/report.pdf"): "stored"}),
            "row",
        ),
        Record("a real presigned URL of 2,000 characters", with_urls(**{presigned: "stored"}), "row"),
        Record(
            "Azure SAS with a date-only expiry",
            with_urls(**{url("files/sas/x.pdf") + "?sv=2024&se=2030-01-01&sig=abc": "stored"}),
            "row",
        ),
        Record(
            "X-Amz-Expires=99999999999999",
            with_urls(
                **{
                    url("files/amz/x.pdf")
                    + "?X-Amz-Date=20261201T000000Z&X-Amz-Expires=99999999999999&X-Amz-Signature=s": "stored"
                }
            ),
            "row",
        ),
        Record(
            "Expires=99999999999999",
            with_urls(**{url("files/v2/x.pdf") + "?Expires=99999999999999&Signature=s": "stored"}),
            "row",
        ),
        Record("a wholly non-ASCII file name", with_urls(**{url("files/jp/見積書.pdf"): "stored"}), "row"),
        Record(
            "a fullwidth host name",
            with_urls(**{url("files/fw/x.pdf").replace("attachments.test", "ａｔｔａｃｈｍｅｎｔｓ.test"): "stored"}),
            "row",
        ),
        Record("IDNA look-alike host", with_urls(**{"http://glaß.com/x.pdf": "dlq:blocked_url"}), "row"),
        Record("percent-encoded host", with_urls(**{"http://attachments%2Etest/x.pdf": "dlq:blocked_url"}), "row"),
        Record(
            "credentials in the URL",
            with_urls(**{url("files/c/x.pdf").replace("http://", "http://user:pw@"): "dlq:blocked_url"}),
            "row",
        ),
        Record("bidi override in the URL", with_urls(**{url("files/\u202efdp.exe"): "dlq:blocked_url"}), "row"),
        Record("a URL of 9,000 characters", with_urls(**{url("files/" + "l" * 9000 + ".pdf"): "dlq:blocked_url"}), "row"),
        Record(
            "a host resolving to a private address", with_urls(**{"http://internal.test/x.pdf": "dlq:blocked_address"}), "row"
        ),
        Record("gzip body", with_urls(**{url("gzip/z.pdf"): "stored"}), "row"),
        Record("gzip bomb", with_urls(**{url(f"bomb/{64 * 1024 * 1024}/bomb.pdf"): "dlq:too_large"}), "row"),
        Record("brotli the client never asked for", with_urls(**{url("encoded/br/b.pdf"): "dlq:unsupported_encoding"}), "row"),
        Record("a host dripping a byte at a time", with_urls(**{url("drip/0.2/d.pdf"): "retry:deadline_exceeded"}), "row"),
        Record(
            "redirect to https://[::1",
            with_urls(**{url("raw-redirect") + "?to=" + quote("https://[::1", safe=""): "dlq:blocked_redirect"}),
            "row",
        ),
        Record("redirect loop", with_urls(**{url("loop/l.pdf"): "dlq:too_many_redirects"}), "row"),
        Record(
            "Retry-After date without a zone",
            with_urls(**{url("retry-after/" + quote("Wed, 21 Oct 2035 07:28:00", safe="") + "/r1.pdf"): "retry:http_503"}),
            "row",
        ),
        Record(
            "Retry-After -0000",
            with_urls(**{url("retry-after/" + quote("Wed, 21 Oct 2035 07:28:00 -0000", safe="") + "/r2.pdf"): "retry:http_503"}),
            "row",
        ),
        Record(
            "Retry-After superscript two",
            with_urls(**{url("retry-after/" + quote("²", safe="") + "/r3.pdf"): "retry:http_503"}),
            "row",
        ),
        Record("an answer that is not HTTP", with_urls(**{url("garbage/g.pdf"): "retry:protocol_error"}), "row"),
        Record("a 20 kB response header", with_urls(**{url("long-header/h.pdf"): "retry:protocol_error"}), "row"),
        Record("a body shorter than its Content-Length", with_urls(**{url("short/s.pdf"): "retry:connection_error"}), "row"),
        Record("an empty body", with_urls(**{url("empty/e.pdf"): "dlq:wrong_file_type"}), "row"),
        Record("an HTML page for a PDF", with_urls(**{url("as/text%2Fhtml/h.pdf"): "dlq:wrong_file_type"}), "row"),
        Record(
            "a traversal in Content-Disposition",
            with_urls(
                **{url("disposition/download") + "?cd=" + quote('attachment; filename="../../etc/x.pdf"', safe=""): "stored"}
            ),
            "row",
        ),
        Record("401", with_urls(**{url("status/401/x.pdf"): "dlq:http_401"}), "row"),
    ]
    return cases, urls


def download_task_cases(pending_good: Callable[[], bytes]) -> list[Record]:
    task = json.loads(pending_good())
    return [
        Record("task: garbage bytes", b"\xde\xad\xbe\xef", "dlq:malformed"),
        Record("task: negative retry count", raw({**task, "retry_count": -1}), "dlq:invalid", reason="retry_count"),
        Record(
            "task: impossible ingestion date",
            raw({**task, "source": {**task["source"], "ingestion_date": "9999-99-99"}}),
            "dlq:invalid",
        ),
        Record("task: event time year 10000", raw({**task, "event_timestamp": "9999-12-31T23:59:59-01:00"}), "dlq:invalid"),
        Record("task: 1 MB trace id", raw({**task, "trace_id": "t" * 1_000_000}), "dlq:invalid", reason="trace_id"),
        Record("task: a JSON string", b'"a task"', "dlq:invalid"),
    ]


def claimx_event_cases(source: ClaimXEventSource) -> list[Record]:
    base = source.event("PROJECT_CREATED")
    return [
        Record("claimx: unknown event type", raw({**base, "event_type": "PROJECT_DELETED"}), "dlq:invalid"),
        Record(
            "claimx: file event without media",
            raw({**base, "event_type": "PROJECT_FILE_ADDED"}),
            "dlq:invalid",
            reason="media_id",
        ),
        Record("claimx: path in project id", raw({**base, "project_id": "../../admin"}), "dlq:invalid", reason="project_id"),
        Record(
            "claimx: project id 10^308",
            encode(base).replace(b'"project_id":', b'"project_id":1' + b"0" * 308 + b',"x":'),
            "dlq:invalid",
        ),
        Record("claimx: NaN in raw_data", raw({**base, "raw_data": {"v": float("nan")}}), "dlq:malformed"),
        Record(
            "claimx: 1e400 in raw_data",
            encode({**base, "raw_data": {}}).replace(b'"raw_data":{}', b'"raw_data":{"v":1e400}'),
            "dlq:invalid",
            reason="raw_data",
        ),
        Record(
            "claimx: ingested year 10000",
            raw({**base, "ingested_at": "9999-12-31T23:59:59-01:00"}),
            "dlq:invalid",
            reason="ingested_at",
        ),
        Record("claimx: not JSON", b"<xml/>", "dlq:malformed"),
    ]


@pytest.fixture
def host():
    server = AttachmentHost(host_name="attachments.test", file_size=8 * 1024).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
def hostile_resources(resources, host, kafka, topics):
    """The suite's resources, with downloads bounded tightly enough to meet the bomb and the
    drip, and the topics sized as in production: the source takes 4 MB records, its DLQ 1 MB."""
    settings = resources["attachment_http"].settings.model_copy(
        update={"max_file_bytes": 1024 * 1024, "download_deadline_s": 3.0, "concurrency": 16}
    )
    limits = {topics.xact.events: str(4 * 1024 * 1024), topics.xact.events_dlq: str(1024 * 1024)}
    admin = kafka.admin()  # held: the futures die with their client
    futures = admin.incremental_alter_configs(
        [
            ConfigResource(
                ConfigResource.Type.TOPIC,
                name,
                incremental_configs=[ConfigEntry("max.message.bytes", size, incremental_operation=AlterConfigOpType.SET)],
            )
            for name, size in limits.items()
        ]
    )
    for future in futures.values():
        future.result(30)
    return {**resources, "attachment_http": AttachmentHttpResource(settings=DownloadSettings(**settings.model_dump()))}


def produce_interleaved(
    kafka, topic: str, records: list[Record], good: Callable[[], bytes], partitions: int = 3
) -> dict[tuple[int, int], Record]:
    """Each record between two good ones, round robin over the partitions; returns what every
    offset holds (good records as kind ``good``)."""
    producer = Producer(
        {**kafka.client_config(), "message.max.bytes": 16 * 1024 * 1024, "compression.type": "lz4", "linger.ms": 5}
    )
    placed: dict[tuple[int, int], Record] = {}
    errors: list = []

    def send(record: Record, partition: int) -> None:
        def delivered(err, msg):
            if err is not None:
                errors.append(err)
            else:
                placed[(msg.partition(), msg.offset())] = record

        value = record.value() if callable(record.value) else record.value
        producer.produce(
            topic, value=value, key=record.key, headers=record.headers or None, partition=partition, on_delivery=delivered
        )
        producer.flush(30)  # one at a time: offsets follow the order

    for index, record in enumerate(records):
        partition = index % partitions
        send(Record("good", good(), "row"), partition)
        send(record, partition)
        send(Record("good", good(), "row"), partition)
    assert not errors, errors
    return placed


def dead_letters(consume_all, topic: str) -> dict[tuple[int, int], dict[str, Any]]:
    """The DLQ's entries by the offset of the record they stand for."""
    entries = {}
    for message in consume_all(topic):
        headers = error_headers(message)
        entries[(int(headers["partition"]), int(headers["offset"]))] = {
            **headers,
            "claim": CLAIM_CHECK_HEADER in dict(message.headers() or []),
        }
    return entries


def account(
    placed: dict[tuple[int, int], Record], rows: set[tuple[int, int]], dlq: dict[tuple[int, int], dict[str, Any]]
) -> Counter:
    """Every offset exactly once: as a row, a duplicate or a DLQ entry with its reason."""
    outcomes: Counter = Counter()
    for position, record in placed.items():
        as_row, in_dlq = position in rows, position in dlq
        if record.expect == "row":
            assert as_row and not in_dlq, f"{record.kind}: expected a row"
        elif record.expect == "duplicate":
            assert not as_row and not in_dlq, f"{record.kind}: expected a skipped duplicate"
        else:
            category = record.expect.split(":", 1)[1]
            assert in_dlq and not as_row, f"{record.kind}: expected a dead letter"
            entry = dlq[position]
            assert entry["category"] == category, f"{record.kind}: {entry['category']} ({entry['reason']})"
            assert record.reason in entry["reason"], f"{record.kind}: reason {entry['reason']!r}"
            assert entry["reason"], f"{record.kind}: no reason"
        outcomes[record.expect] += 1
    assert not (set(dlq) - set(placed)), "a dead letter for an offset nobody produced"
    return outcomes


def stream_all(job, asset, topic: str, resources, instance) -> None:
    """Streaming runs of a few seconds each until the asset's consumer group has committed
    every offset of ``topic``; every run must succeed."""
    stream_resources = streaming(resources, max_run_s=5.0)
    group, kafka = resources["ingest"].consumer_group(asset.key.to_user_string()), resources["kafka"]
    for _ in range(60):  # a bound, not a pace: each run stops once it has read what is there
        result = location(stream_resources).get_job_def(job.name).execute_in_process(instance=instance, raise_on_error=False)
        assert result.success, f"{job.name} failed on hostile input"
        states = kafka.partition_states(topic, 10)
        if kafka.committed_offsets(group, topic, states, 10) == {p: s.high for p, s in states.items()}:
            return
    raise AssertionError(f"{job.name} left offsets of {topic} uncommitted")


def batch_all(job, asset, topic: str, resources, instance) -> None:
    sensor = {xact_events.key: xact_events_kafka_sensor, xact_attachments.key: xact_attachments_pending_sensor}[asset.key]
    run_all(sensor, asset, resources, instance)


@pytest.mark.parametrize("consume", [batch_all, stream_all], ids=["batch runs", "streaming runs"])
def test_no_record_or_answer_stops_the_xact_pipeline(
    consume, hostile_resources, host, kafka, lake, files, topics, instance, consume_all
):
    good_events: list[dict] = []

    def good() -> dict:
        event = xevent(attachments=[host.url(f"files/good/{uuid.uuid4().hex[:8]}.pdf")])
        good_events.append(event)
        return event

    cases, url_outcomes = event_cases(host, good_events)
    assert len(cases) >= 30
    placed = produce_interleaved(kafka, topics.xact.events, cases, lambda: encode(good()))

    consume(xact_events_stream_job, xact_events, topics.xact.events, hostile_resources, instance)

    rows = table_rows(lake, "xact_events")
    dlq = dead_letters(consume_all, topics.xact.events_dlq)
    outcomes = account(placed, set(zip(rows["kafka_partition"], rows["kafka_offset"])), dlq)
    assert outcomes["dlq:malformed"] >= 8 and outcomes["dlq:invalid"] >= 10
    claimed = [entry for entry in dlq.values() if entry["claim"]]
    assert len(claimed) == 1  # the 2 MB record: its bytes wait in the file store
    assert set(rows["trace_id"]) >= {e["trace_id"] for e in good_events}

    # The download tasks, plus hostile records on downloads.pending itself.
    pending = consume_all(topics.xact.downloads_pending)
    good_task = pending[0].value()
    task_cases = download_task_cases(lambda: good_task)
    good_urls = {e["attachments"][0] for e in good_events}
    placed_tasks = produce_interleaved(kafka, topics.xact.downloads_pending, task_cases, lambda: good_task)
    assert not (set(placed_tasks) & {(m.partition(), m.offset()) for m in pending})

    consume(xact_attachments_stream_job, xact_attachments, topics.xact.downloads_pending, hostile_resources, instance)

    inventory = table_rows(lake, "xact_attachments")
    stored = set(inventory["attachment_url"])
    assert good_urls <= stored, "good attachments after the bad ones did not land"
    task_dlq = dead_letters(consume_all, topics.xact.downloads_dlq)
    by_code = {
        json.loads(m.value())["task"]["attachment_url"]: json.loads(m.value())["error_code"]
        for m in consume_all(topics.xact.downloads_dlq)
        if b'"task"' in (m.value() or b"")
    }
    retried = {}
    for retry_topic, _ in hostile_resources["ingest"].retry_topics(topics.xact.downloads_pending):
        for message in consume_all(retry_topic):
            task = json.loads(message.value())
            retried[task["attachment_url"]] = task["history"][-1]["code"]
    for url, expected in url_outcomes.items():
        where, _, code = expected.partition(":")
        if where == "stored":
            assert url in stored, f"{url[:80]}: not stored (dlq {by_code.get(url)}, retry {retried.get(url)})"
        elif where == "retry":
            assert retried.get(url) == code and url not in stored, (
                f"{url[:80]}: expected retry {code}, got {retried.get(url)} / dlq {by_code.get(url)}"
            )
        else:
            assert by_code.get(url) == code and url not in stored, (
                f"{url[:80]}: expected DLQ {code}, got {by_code.get(url)} / retry {retried.get(url)}"
            )
    # Hostile task records: dead-lettered as they were, by their own offsets, with a reason.
    for position, record in placed_tasks.items():
        if record.kind == "good":
            continue
        entry = task_dlq[position]
        assert entry["category"] == record.expect.split(":")[1] and record.reason in entry["reason"], (record.kind, entry)
    blobs = inventory.filter(inventory["attachment_url"].is_in([u for u in url_outcomes if "report.pdf" in u]))["blob_path"]
    assert blobs.n_unique() == 2  # same file name, two blobs
    japanese = inventory.filter(inventory["attachment_url"].str.contains("jp/"))
    assert japanese["file_name"].to_list() == ["attachment.pdf"]


def hostile_answer(kind: str, project: dict, media: list[dict]) -> bytes:
    if kind == "nesting 5,000 deep":
        return b'{"projectId": "P", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    if kind == "an impossible date":
        return json.dumps({**project, "dateOfLoss": "2026-13-45"}).encode()
    if kind == "year 10000":
        return json.dumps({**project, "createdAt": "9999-12-31T23:59:59-01:00"}).encode()
    if kind == "an integer past int64":
        return json.dumps({**media[-1], "sizeBytes": 10**30}).encode()
    return b"<html>maintenance</html>"


def test_no_record_or_answer_stops_the_claimx_pipeline(
    resources, kafka, lake, topics, instance, consume_all, claimx_world, claimx_api_double
):
    source = ClaimXEventSource(claimx_world, random.Random(5), active_projects=4)

    def good() -> bytes:
        return encode(source.event("PROJECT_FILE_ADDED"))

    cases = claimx_event_cases(source)
    # New projects whose API answers are hostile; their own source, so no good event uses them.
    hostile_projects = ClaimXEventSource(claimx_world, random.Random(6))
    poisoned = {}
    for answer, endpoint, expected in [
        ("nesting 5,000 deep", None, "RecursionError"),
        ("an impossible date", None, "invalid dateOfLoss"),
        ("year 10000", None, "invalid createdAt"),
        ("an integer past int64", "project_media", "invalid sizeBytes"),
        ("not JSON", None, "not JSON"),
    ]:
        event = hostile_projects.event("PROJECT_FILE_ADDED" if endpoint else "PROJECT_CREATED", claimx_world.new_project())
        project_id = str(event["project_id"])
        body = hostile_answer(answer, claimx_world.project_json(project_id), claimx_world.media_json(project_id))
        claimx_api_double.poison(project_id, body, endpoint)
        poisoned[event["event_id"]] = (answer, expected)
        cases.append(Record(f"claimx API answer: {answer}", encode(event), "row"))
    placed = produce_interleaved(kafka, topics.claimx.events, cases, good)

    run_all(claimx_events_kafka_sensor, claimx_events, resources, instance)
    events = table_rows(lake, "claimx_events")
    account(
        placed, set(zip(events["kafka_partition"], events["kafka_offset"])), dead_letters(consume_all, topics.claimx.events_dlq)
    )

    first_task = consume_all(topics.claimx.enrichment_pending)[0].value()
    task = json.loads(first_task)
    enrichment_cases = [
        Record("enrichment: garbage", b"\x00\x01", "dlq:malformed"),
        Record("enrichment: unknown event type", raw({**task, "event_type": "NOPE"}), "dlq:invalid"),
        Record("enrichment: id with a slash", raw({**task, "project_id": "a/b"}), "dlq:invalid"),
    ]
    placed_tasks = produce_interleaved(kafka, topics.claimx.enrichment_pending, enrichment_cases, lambda: first_task)
    run_all(claimx_enrichment_pending_sensor, claimx_entities, resources, instance)

    log = table_rows(lake, "claimx_enrichment_log")
    task_dlq = dead_letters(consume_all, topics.claimx.enrichment_dlq)
    for position, record in placed_tasks.items():
        if record.kind != "good":
            assert task_dlq[position]["category"] == record.expect.split(":")[1], record.kind
    outcome = dict(zip(log["event_id"], log["outcome"]))
    detail = dict(zip(log["event_id"], log["detail"]))
    for event_id, (answer, expected) in poisoned.items():
        assert outcome[event_id] == "dead_lettered" and expected in detail[event_id], (answer, detail[event_id])
    good_events = set(events.filter(~events["event_id"].is_in(list(poisoned)))["event_id"])
    assert {e for e in good_events if outcome.get(e) == "enriched"} == good_events

    media_task = consume_all(topics.claimx.downloads_pending)[0].value()
    task = json.loads(media_task)
    media_cases = [
        Record("media: garbage", b"\xff" * 64, "dlq:malformed"),
        Record(
            "media: link of 70,000 characters",
            raw({**task, "download_url": "http://media.claimx.test/" + "x" * 70_000}),
            "dlq:invalid",
            reason="download_url",
        ),
        Record(
            "media: expiry in year 10000",
            raw({**task, "expires_at": "9999-12-31T23:59:59-01:00"}),
            "dlq:invalid",
            reason="expires_at",
        ),
        Record("media: media id with a slash", raw({**task, "media_id": "../m"}), "dlq:invalid", reason="media_id"),
    ]
    placed_media = produce_interleaved(kafka, topics.claimx.downloads_pending, media_cases, lambda: media_task)
    run_all(claimx_attachments_pending_sensor, claimx_attachments, resources, instance)
    media_dlq = dead_letters(consume_all, topics.claimx.downloads_dlq)
    for position, record in placed_media.items():
        if record.kind != "good":
            entry = media_dlq[position]
            assert entry["category"] == record.expect.split(":")[1] and record.reason in entry["reason"], (record.kind, entry)
    media = table_rows(lake, "claimx_attachments")
    added = events.filter((events["event_type"] == "PROJECT_FILE_ADDED") & ~events["event_id"].is_in(list(poisoned)))
    assert set(added["media_id"]) <= set(media["media_id"]), "media of good events after the bad ones did not land"
