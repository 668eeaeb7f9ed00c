"""Kafka feeds: what a Kafka-fed asset reads (its topics, found in its resources), the cluster
they live on, the Delta table holding its watermarks, and its consumer group. Sensors, the offset
reset job and the stream health checks are all built from feeds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from pipeline_defs.lib.settings import IngestConfigResource


@dataclass(frozen=True)
class SensorTopic:
    name: str
    delay_s: Optional[int] = None  # a retry topic: only records older than this are due


@dataclass(frozen=True)
class KafkaFeed:
    """A Kafka-fed asset: its topics (read from the resources named in ``resource_keys``), the
    cluster they live on, the table holding its watermarks (also its asset key), and its
    consumer group (``<prefix>.<asset_name>``)."""

    asset_name: str
    table: str
    topics_of: Callable[[Any], Sequence[SensorTopic]]  # resources -> topics
    resource_keys: frozenset[str] = frozenset()
    cluster: str = "kafka"  # resource key: "source_kafka" for the source events

    def group_id(self, ingest: IngestConfigResource) -> str:
        return ingest.consumer_group(self.asset_name)


def task_feeds(asset_name: str, table: str, pending_of: Callable[[Any], str], resource_key: str) -> tuple[KafkaFeed, KafkaFeed]:
    """The two feeds of a task topic: its new tasks, and the retry topics they wait in."""
    keys = frozenset({resource_key})
    return (
        KafkaFeed(asset_name, table, lambda resources: [SensorTopic(pending_of(resources))], keys),
        KafkaFeed(
            asset_name,
            table,
            lambda resources: [SensorTopic(t, d) for t, d in resources.ingest.retry_topics(pending_of(resources))],
            keys,
        ),
    )
