"""KafkaResource against the real test broker."""

import time
import uuid

import pytest
from confluent_kafka import TopicPartition

from pipeline_defs.domains import pipeline_topics
from pipeline_defs.lib.kafka.clients import KafkaUnavailableError
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import OutRecord, ReadStats
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import IngestSettings, KafkaConnection
from pipeline_defs_tests.support.fakes import FakeCredential
from pipeline_defs_tests.support.fixtures import settings_with_topics


def fill(kafka: KafkaResource, topic: str, partition_counts: dict[int, int]) -> None:
    producer = kafka.producer()
    for partition, count in partition_counts.items():
        for i in range(count):
            producer.produce(topic, value=f"{partition}-{i}".encode(), partition=partition)
    assert producer.flush(30) == 0


def test_partition_states_report_each_partitions_log(kafka, topics):
    fill(kafka, topics.xact.events, {0: 5, 1: 0, 2: 12})
    states = kafka.partition_states(topics.xact.events, 10)
    assert {p: (s.low, s.high) for p, s in states.items()} == {0: (0, 5), 1: (0, 0), 2: (0, 12)}


def test_read_ranges_returns_exactly_the_ranges_in_bounded_batches(kafka, topics):
    fill(kafka, topics.xact.events, {0: 50, 1: 50, 2: 50})
    ranges = [OffsetRange(topics.xact.events, 0, 10, 20), OffsetRange(topics.xact.events, 2, 0, 50)]

    batches = list(kafka.read_ranges(ranges, "g-exact", batch_size=16, timeout_s=20))

    assert all(len(b) <= 16 for b in batches)
    got = sorted((m.partition(), m.offset()) for b in batches for m in b)
    assert got == [(0, o) for o in range(10, 20)] + [(2, o) for o in range(50)]


def test_offsets_deleted_by_retention_are_counted_not_hidden(kafka, topics):
    fill(kafka, topics.xact.events, {0: 30})
    admin = kafka.admin()
    deleted = admin.delete_records([TopicPartition(topics.xact.events, 0, 10)])
    next(iter(deleted.values())).result(10)
    stats = ReadStats()

    batches = list(kafka.read_ranges([OffsetRange(topics.xact.events, 0, 0, 30)], "g-ret", 100, 20, stats))

    assert [m.offset() for b in batches for m in b] == list(range(10, 30))
    assert stats.lost_to_retention == 10 and stats.messages == 20


def test_a_range_past_the_log_end_times_out_as_unavailable(kafka, topics):
    fill(kafka, topics.xact.events, {0: 3})
    with pytest.raises(KafkaUnavailableError, match="timed out"):
        list(kafka.read_ranges([OffsetRange(topics.xact.events, 0, 0, 10)], "g-to", 100, 2))


def test_committed_offsets_round_trip_for_a_group_that_never_subscribes(kafka, topics):
    group = f"g-{uuid.uuid4().hex[:6]}"
    assert kafka.committed_offsets(group, topics.xact.events, [0, 1, 2], 10) == {}
    kafka.commit_offsets(group, {(topics.xact.events, 0): 7, (topics.xact.events, 2): 3})
    assert kafka.committed_offsets(group, topics.xact.events, [0, 1, 2], 10) == {0: 7, 2: 3}


def test_offsets_for_timestamp_find_the_first_message_at_or_after(kafka, topics):
    fill(kafka, topics.xact.events, {0: 5})
    time.sleep(0.05)
    boundary = int(time.time() * 1000)
    time.sleep(0.05)
    fill(kafka, topics.xact.events, {0: 3})
    assert kafka.offsets_for_timestamp(topics.xact.events, boundary, 10)[0] == 5
    assert kafka.offsets_for_timestamp(topics.xact.events, boundary + 3_600_000, 10)[0] == 8


def test_produce_waits_for_acknowledgements_and_keeps_headers(kafka, topics, consume_all):
    sent = kafka.produce(
        topics.xact.events_dlq,
        [OutRecord(value=b"v1", key=b"k", headers=[("h", b"1")]), OutRecord(value=b"v2")],
    )
    assert sent == 2
    messages = sorted(consume_all(topics.xact.events_dlq), key=lambda m: m.value())
    assert [m.value() for m in messages] == [b"v1", b"v2"]
    assert messages[0].headers() == [("h", b"1")]


def test_a_dead_broker_is_reported_within_the_timeout():
    dead = KafkaResource(connection=KafkaConnection(bootstrap_servers="127.0.0.1:1", request_timeout_s=2))
    started = time.monotonic()
    with pytest.raises(KafkaUnavailableError, match="unreachable"):
        dead.partition_states("events.raw", 2)
    assert time.monotonic() - started < 5


def test_oauthbearer_takes_tokens_from_azure_identity_for_the_event_hub_scope():
    scope = "https://claims-ns.servicebus.windows.net/.default"
    eventhub = KafkaResource(
        connection=KafkaConnection(
            bootstrap_servers="claims-ns.servicebus.windows.net:9093",
            security_protocol="SASL_SSL",
            sasl_mechanism="OAUTHBEARER",
            oauth_scope=scope,
        )
    )
    credential = FakeCredential()
    eventhub._credential = credential

    config = eventhub.client_config()

    assert config["sasl.mechanisms"] == "OAUTHBEARER" and config["security.protocol"] == "SASL_SSL"
    assert config["oauth_cb"]("ignored") == ("jwt-token", 1_900_000_000.0)
    assert credential.scopes == [scope]


def test_dlq_topics_take_larger_records_than_their_sources(test_stack, topics):
    kafka = test_stack.kafka(request_timeout_s=60)  # DescribeConfigs answers slowly on a busy machine
    for dlq, source in pipeline_topics(settings_with_topics(topics, IngestSettings())).dead_letters.items():
        assert kafka.max_message_bytes(dlq) >= kafka.max_message_bytes(source) + 64 * 1024, dlq
