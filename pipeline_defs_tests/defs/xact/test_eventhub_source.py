"""xact_events with its source on the Event Hub stand-in (SASL_SSL, OAUTHBEARER) and the
pipeline's own topics on the main test broker: two clusters, each holding only its own part."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline_defs.defs.xact.assets import xact_events
from pipeline_defs.defs.xact.sensors import xact_events_kafka_sensor
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs_tests.support.eventhub import TokenCredentialDouble, eventhub_kafka
from pipeline_defs_tests.support.kafka import (
    as_json,
    execute,
    headers_of,
    metadata_of,
    produce_events,
    produce_raw,
    sample_events,
    table_rows,
    tick,
)
from pipeline_defs_tests.support.stack import LocalStack
from pipeline_sim.events import MALFORMED_MESSAGES


@pytest.fixture
def source_topic(topics, eventhub_admin: KafkaResource) -> Iterator[str]:
    """The test's ``events.raw`` on the stand-in too (the pipeline broker has its own, unused)."""
    eventhub_admin.create_topics([topics.xact.events], 3)
    yield topics.xact.events
    eventhub_admin.admin().delete_topics([topics.xact.events], operation_timeout=30)


def test_xact_events_reads_the_event_hub_and_writes_tasks_and_dead_letters_to_the_pipeline_cluster(
    resources, topics, kafka, lake, instance, consume_all, eventhub_stack: LocalStack, eventhub_admin, source_topic
):
    credential = TokenCredentialDouble(lifetime_s=60)
    source = eventhub_kafka(eventhub_stack, credential)
    wired = {**resources, "source_kafka": source}
    events = sample_events(60)
    produce_events(source, source_topic, events[:30])
    produce_raw(source, source_topic, MALFORMED_MESSAGES)
    produce_events(source, source_topic, events[30:])

    data = tick(xact_events_kafka_sensor, instance, wired)
    results = [execute(xact_events, request, wired, instance) for request in data.run_requests]

    assert data.run_requests and all(result.success for result in results)
    # Events land in Delta ...
    rows = table_rows(lake, "xact_events")
    assert set(rows["trace_id"]) == {e["trace_id"] for e in events} and rows.height == len(events)
    assert metadata_of(results[-1])["lag_total"] == 0  # the lag the run reports is the stand-in's
    # ... download tasks and dead letters on the pipeline cluster ...
    tasks = {(t["trace_id"], t["attachment_url"]) for t in map(as_json, consume_all(topics.xact.downloads_pending))}
    assert tasks == {(e["trace_id"], url) for e in events for url in e["attachments"]}
    dead = consume_all(topics.xact.events_dlq)
    assert sorted(m.value() for m in dead) == sorted(MALFORMED_MESSAGES)
    assert {headers_of(m)["__dlq.errors.topic"] for m in dead} == {source_topic}
    # ... and the group's offsets on the stand-in, where the events are.
    group = resources["ingest"].consumer_group("xact_events")
    ends = {p: s.high for p, s in eventhub_admin.partition_states(source_topic, 10).items()}
    assert sum(ends.values()) == len(events) + len(MALFORMED_MESSAGES)
    assert eventhub_admin.committed_offsets(group, source_topic, ends, 10) == ends

    # Nothing of it on the other cluster: no events, no offsets on the pipeline broker's
    # events.raw; no pipeline topics on the stand-in.
    assert {p: s.high for p, s in kafka.partition_states(source_topic, 10).items()} == dict.fromkeys(ends, 0)
    assert kafka.committed_offsets(group, source_topic, ends, 10) == {}
    on_the_stand_in = set(eventhub_admin.admin().list_topics(timeout=10).topics)
    assert not {topics.xact.downloads_pending, topics.xact.events_dlq} & on_the_stand_in
    assert credential.count >= 1 and set(credential.scopes) == {(eventhub_stack.eventhub_scope,)}
