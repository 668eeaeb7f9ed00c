"""Consumer lag of the pipeline's groups on every pipeline topic, in a few broker calls per
scrape: one metadata request for all topics, one ListOffsets for all partitions, and one
OffsetFetch per consumer group, in parallel (through a consumer kept per group, never
subscribed, so it never joins the group). The groups are listed from the broker (those with the pipeline's
prefix, refreshed every ``groups_ttl_s``) plus the feeds' own, which count from the log start
until they first commit."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from pipeline_defs.lib.kafka.clients import KafkaUnavailableError
from pipeline_defs.ops.targets import Cluster

TopicPartitionKey = tuple[str, int]


@dataclass
class LagSnapshot:
    lag: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group, topic, partition) -> messages
    end_offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def lag_of(
    ends: dict[TopicPartitionKey, int],
    starts: dict[TopicPartitionKey, int],
    committed: dict[str, dict[TopicPartitionKey, int]],
    pairs: set[tuple[str, str]],
) -> dict[tuple[str, str, int], int]:
    """End offset minus committed offset per (group, topic, partition); a feed's pair without a
    commit counts from the log start; a commit below the log start counts from there (the
    records in between are gone), and a commit past the end is no lag."""
    lag: dict[tuple[str, str, int], int] = {}
    for group, offsets in committed.items():
        for (topic, partition), offset in offsets.items():
            if (topic, partition) in ends:
                start = max(offset, starts.get((topic, partition), 0))
                lag[(group, topic, partition)] = max(ends[(topic, partition)] - start, 0)
    for group, topic in pairs:
        for (t, partition), end in ends.items():
            if t == topic and (group, t, partition) not in lag:
                lag[(group, t, partition)] = max(end - starts.get((t, partition), 0), 0)
    return lag


class LagReader:
    def __init__(self, cluster: Cluster, group_prefix: str, groups_ttl_s: float = 60.0) -> None:
        self.cluster = cluster
        self.group_prefix = group_prefix
        self.groups_ttl_s = groups_ttl_s
        self._groups: list[str] = []
        self._groups_at = float("-inf")
        self._consumers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ops-offsets")

    @property
    def timeout_s(self) -> float:
        return min(self.cluster.kafka.connection.request_timeout_s, 5.0)

    def read(self) -> LagSnapshot:
        with self._lock:
            snapshot = LagSnapshot()
            partitions = self._partitions()
            if not partitions:
                return snapshot
            asked = [self._ask_offsets(partitions, OffsetSpec.latest()), self._ask_offsets(partitions, OffsetSpec.earliest())]
            ends, starts = (self._answers(futures) for futures in asked)
            groups = sorted(set(self._listed_groups()) | {g for g, _ in self.cluster.pairs})
            for gone in set(self._consumers) - set(groups):  # a group deleted from the broker
                self._consumers.pop(gone).close()
            for group in groups:  # consumers are made here, one thread; asked in parallel below
                if group not in self._consumers:
                    self._consumers[group] = self.cluster.kafka.consumer(group)
            committed: dict[str, dict[TopicPartitionKey, int]] = {}
            answers = self._pool.map(lambda g: self._committed_or_error(g, partitions), groups)
            for group, answer in zip(groups, answers):
                if isinstance(answer, str):
                    snapshot.errors.append(answer)
                else:
                    committed[group] = answer
            snapshot.end_offsets = ends
            snapshot.lag = lag_of(ends, starts, committed, self.cluster.pairs)
            return snapshot

    def _partitions(self) -> list[TopicPartitionKey]:
        admin = self.cluster.kafka.admin()
        try:
            topics = admin.list_topics(timeout=self.timeout_s).topics
        except KafkaException as exc:
            raise KafkaUnavailableError(f"{self.cluster.kafka.connection.bootstrap_servers}: {exc.args[0]}") from exc
        return [
            (name, p)
            for name in self.cluster.topics
            if name in topics and topics[name].error is None
            for p in sorted(topics[name].partitions)
        ]

    def _ask_offsets(self, partitions: list[TopicPartitionKey], spec: OffsetSpec) -> dict[TopicPartition, Any]:
        return self.cluster.kafka.admin().list_offsets(
            {TopicPartition(t, p): spec for t, p in partitions},
            isolation_level=IsolationLevel.READ_UNCOMMITTED,
            request_timeout=self.timeout_s,
        )

    def _answers(self, futures: dict[TopicPartition, Any]) -> dict[TopicPartitionKey, int]:
        offsets: dict[TopicPartitionKey, int] = {}
        for tp, future in futures.items():
            try:
                offsets[(tp.topic, tp.partition)] = future.result(timeout=self.timeout_s).offset
            except Exception as exc:
                raise KafkaUnavailableError(f"offsets of {tp.topic}[{tp.partition}]: {exc}") from exc
        return offsets

    def _listed_groups(self) -> list[str]:
        if time.monotonic() - self._groups_at < self.groups_ttl_s:
            return self._groups
        future = self.cluster.kafka.admin().list_consumer_groups(request_timeout=self.timeout_s)
        try:
            result = future.result(timeout=self.timeout_s)
        except Exception as exc:
            raise KafkaUnavailableError(f"consumer groups: {exc}") from exc
        self._groups = sorted(g.group_id for g in result.valid if g.group_id.startswith(self.group_prefix))
        self._groups_at = time.monotonic()
        return self._groups

    def _committed(self, group: str, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Asked through a consumer of the group (see ``KafkaMetadata.committed_with_metadata``:
        the admin API's ListConsumerGroupOffsets can crash librdkafka)."""
        try:
            answer = self._consumers[group].committed([TopicPartition(t, p) for t, p in partitions], timeout=self.timeout_s)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"committed offsets of {group}: {exc.args[0]}") from exc
        return {(tp.topic, tp.partition): tp.offset for tp in answer if tp.offset >= 0}

    def _committed_or_error(self, group: str, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int] | str:
        try:
            return self._committed(group, partitions)
        except KafkaUnavailableError as exc:
            return str(exc)[:300]

    def close(self) -> None:
        with self._lock:
            for consumer in self._consumers.values():
                consumer.close()
            self._consumers.clear()
        self._pool.shutdown(wait=False)
