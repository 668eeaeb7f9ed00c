"""The Kafka-to-Delta engine: watermarks, key dedup and concurrent writers, on real services."""

import uuid
from collections.abc import Callable
from datetime import date

from azure.storage.blob import BlobServiceClient

from pipeline_defs.defs.xact.models import XACT_EVENTS
from pipeline_defs.lib.attachments.file_store import FileStoreResource
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.dlq.records import DeadLetterTopic
from pipeline_defs.lib.ingest.consume import consume_ranges, watermark_app_id
from pipeline_defs.lib.ingest.event_log import EventLogSink
from pipeline_defs.lib.ingest.sink import BatchContext, IngestMode, IngestReport
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import OutRecord, Topic
from pipeline_defs.lib.settings import StorageSettings
from pipeline_defs_tests.support.kafka import produce_events, produce_raw, sample_events, table_rows
from pipeline_sim.events import MALFORMED_MESSAGES

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
TODAY = date(2026, 11, 22)
NO_CLAIMS = FileStoreResource(storage=StorageSettings(files_root="/nonexistent/claims"))  # these dead letters are small


def all_ranges(kafka, topic):
    return [OffsetRange(topic, p, s.low, s.high) for p, s in kafka.partition_states(topic, 10).items()]


def context_for(group):
    return BatchContext(
        group_id=group,
        run_id=f"run-{uuid.uuid4().hex[:6]}",
        ingestion_date=TODAY,
        mode=IngestMode.STREAM,
        report=IngestReport(),
    )


def ingest(kafka, lake, topic, dlq_topic, group, sink=None):
    sink = sink or EventLogSink(spec=XACT_EVENTS, dead_letters=DeadLetterTopic(kafka, dlq_topic, NO_CLAIMS))
    return consume_ranges(all_ranges(kafka, topic), sink=sink, source=kafka, lake=lake, context=context_for(group))


class RivalCommitsFirst(EventLogSink):
    """Just before this sink's first commit, another run commits the same ranges."""

    rival: Callable[[], object] = lambda: None
    raced: bool = False

    def write(self, rows, table, commit, context):
        if not self.raced:
            self.raced = True
            self.rival()
        return super().write(rows, table, commit, context)


def test_a_concurrent_writer_makes_the_loser_retry_its_commit_and_add_nothing(kafka, lake, topics):
    produce_events(kafka, topics.xact.events, sample_events(200))
    racing = RivalCommitsFirst(spec=XACT_EVENTS, dead_letters=DeadLetterTopic(kafka, topics.xact.events_dlq, NO_CLAIMS))
    racing.rival = lambda: ingest(kafka, lake, topics.xact.events, topics.xact.events_dlq, "g")

    report = ingest(kafka, lake, topics.xact.events, topics.xact.events_dlq, "g", sink=racing)

    assert report.commit_conflicts == 1  # delta-rs refused the commit against the stale snapshot
    assert report.rows_written == 0  # the retry found the rival had committed everything
    again = ingest(kafka, lake, topics.xact.events, topics.xact.events_dlq, "g")
    assert again.messages_read == 0 and again.already_committed == 200
    rows = table_rows(lake, "xact_events")
    assert rows.height == 200 and rows["trace_id"].n_unique() == 200


def test_two_writers_on_disjoint_partitions_each_commit_their_own_offsets_once(kafka, lake, topics, consume_all):
    """Two writer runs of one table (``ingest.writers_per_table: 2``): the second commits just
    before the first; the first loses the race, retries against the new snapshot and still
    commits all its rows, because no offset of its partitions was in the winner's commit, and
    it does not send its rows' follow-up tasks a second time."""
    produce_events(kafka, topics.xact.events, sample_events(300))
    ranges = all_ranges(kafka, topics.xact.events)
    even, odd = [r for r in ranges if r.partition % 2 == 0], [r for r in ranges if r.partition % 2 == 1]
    tasks = Topic(kafka, topics.xact.downloads_pending)
    dead_letters = DeadLetterTopic(kafka, topics.xact.events_dlq, NO_CLAIMS)

    def task_per_event(row: dict) -> list[OutRecord]:
        return [OutRecord(value=row["trace_id"].encode())]

    racing = RivalCommitsFirst(XACT_EVENTS, dead_letters, follow_up=tasks, follow_ups=task_per_event)
    rival: list[IngestReport] = []
    odd_sink = EventLogSink(XACT_EVENTS, dead_letters, follow_up=tasks, follow_ups=task_per_event)
    racing.rival = lambda: rival.append(consume_ranges(odd, sink=odd_sink, source=kafka, lake=lake, context=context_for("w")))

    report = consume_ranges(even, sink=racing, source=kafka, lake=lake, context=context_for("w"))

    assert sum(r.size for r in even) and sum(r.size for r in odd)  # both writers had work
    assert report.commit_conflicts == 1 and report.rows_written == sum(r.size for r in even)
    assert rival[0].rows_written == sum(r.size for r in odd)
    rows = table_rows(lake, "xact_events")
    assert rows.height == 300 and rows["trace_id"].n_unique() == 300
    table = lake.load("xact_events")
    assert {r.partition: table.transaction_version(watermark_app_id("w", r.topic, r.partition)) for r in ranges} == {
        r.partition: r.end for r in ranges
    }
    sent = [m.value().decode() for m in consume_all(topics.xact.downloads_pending)]  # events with attachments
    assert sent and len(sent) == len(set(sent)) and set(sent) <= set(rows["trace_id"].to_list())


def test_a_batch_of_only_rejects_still_advances_watermark_and_group(kafka, lake, topics, consume_all):
    produce_raw(kafka, topics.xact.events, MALFORMED_MESSAGES)

    report = ingest(kafka, lake, topics.xact.events, topics.xact.events_dlq, "g-rej")

    assert report.rows_written == 0 and report.dead_lettered == len(MALFORMED_MESSAGES)
    table = lake.load("xact_events")
    states = kafka.partition_states(topics.xact.events, 10)
    for partition, state in states.items():
        version = table.transaction_version(watermark_app_id("g-rej", topics.xact.events, partition))
        assert (version or 0) == state.high
    assert len(consume_all(topics.xact.events_dlq)) == len(MALFORMED_MESSAGES)
    again = ingest(kafka, lake, topics.xact.events, topics.xact.events_dlq, "g-rej")
    assert again.messages_read == 0 and len(consume_all(topics.xact.events_dlq)) == len(MALFORMED_MESSAGES)


def test_delta_tables_on_azurite_through_az_urls(kafka, topics, test_stack):
    endpoint = f"http://127.0.0.1:{test_stack.azurite_port}/devstoreaccount1"
    container = f"lake-{uuid.uuid4().hex[:8]}"
    BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    ).create_container(container)
    lake = DeltaLakeResource(
        storage=StorageSettings(
            lake_root=f"az://{container}/Tables",
            azure_account_name="devstoreaccount1",
            azure_endpoint=endpoint,
        ),
        azure_account_key=AZURITE_KEY,
    )
    produce_events(kafka, topics.xact.events, sample_events(50))

    report = ingest(kafka, lake, topics.xact.events, topics.xact.events_dlq, "g-az")

    assert lake.table_uri("xact_events") == f"az://{container}/Tables/xact_events"
    assert report.rows_written == 50 and report.delta_version is not None
    assert table_rows(lake, "xact_events").height == 50
    again = ingest(kafka, lake, topics.xact.events, topics.xact.events_dlq, "g-az")
    assert again.rows_written == 0 and table_rows(lake, "xact_events").height == 50
