"""How far behind a Kafka-fed table is: per partition, the log end minus the table's watermark
(else the group's committed offset, else the log start)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline_defs.lib.ingest.consume import stream_positions
from pipeline_defs.lib.ingest.feeds import KafkaFeed


@dataclass
class FeedLag:
    by_partition: dict[str, int] = field(default_factory=dict)  # "topic[p]" -> offsets not consumed yet
    past_log_end: dict[str, int] = field(default_factory=dict)  # "topic[p]" -> a watermark past the log end

    @property
    def total(self) -> int:
        return sum(self.by_partition.values())


def feed_lag(feeds: Sequence[KafkaFeed], resources: Any, include_delayed: bool = False) -> FeedLag:
    """The lag of ``feeds`` (one table's), read from the clusters, the lake and the topic
    resources in ``resources``. Retry topics wait on purpose and are left out unless asked for.
    Raises ``KafkaUnavailableError`` when a broker does not answer."""
    lag = FeedLag()
    for feed in feeds:
        kafka = getattr(resources, feed.cluster)
        table = resources.lake.load(feed.table)
        for topic in feed.topics_of(resources):
            if topic.delay_s is not None and not include_delayed:
                continue
            states = kafka.partition_states(topic.name, kafka.connection.request_timeout_s)
            marks = stream_positions(table, topic.name, sorted(states), kafka, feed.group_id(resources.ingest))
            for partition, state in states.items():
                name = f"{topic.name}[{partition}]"
                if marks[partition] > state.high:
                    lag.past_log_end[name] = marks[partition]
                else:
                    lag.by_partition[name] = state.high - max(marks[partition], state.low)
    return lag
