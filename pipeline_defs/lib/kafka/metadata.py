"""What a cluster says about its topics and groups: partitions and their offsets, offsets by
time, committed group offsets, topic limits; and the writes of that kind (commits, topics).
Every call takes a timeout."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Optional

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from pipeline_defs.lib.kafka.clients import KafkaClients, KafkaUnavailableError, result_of
from pipeline_defs.lib.kafka.ranges import PartitionState

# What librdkafka and a Kafka topic accept unless told otherwise (Event Hubs: 1 MB, fixed).
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000


class KafkaMetadata:
    """Offsets, groups and topic settings; mixed into ``KafkaResource``."""

    def partition_states(self: KafkaClients, topic: str, timeout_s: float) -> dict[int, PartitionState]:
        """Low watermark and last stable offset of every partition of ``topic``."""
        deadline = time.monotonic() + timeout_s
        admin = self.admin()
        partitions = _partitions(self, admin, topic, timeout_s)
        lows = _list_offsets(admin, topic, partitions, OffsetSpec.earliest(), deadline)
        highs = _list_offsets(admin, topic, partitions, OffsetSpec.latest(), deadline)
        return {p: PartitionState(low=lows[p], high=highs[p]) for p in partitions}

    def offsets_for_timestamp(self: KafkaClients, topic: str, timestamp_ms: int, timeout_s: float) -> dict[int, int]:
        """First offset at or after ``timestamp_ms`` per partition (the log end if none)."""
        deadline = time.monotonic() + timeout_s
        admin = self.admin()
        partitions = _partitions(self, admin, topic, timeout_s)
        by_time = _list_offsets(admin, topic, partitions, OffsetSpec.for_timestamp(timestamp_ms), deadline)
        ends = _list_offsets(admin, topic, partitions, OffsetSpec.latest(), deadline)
        return {p: (by_time[p] if by_time[p] >= 0 else ends[p]) for p in partitions}

    def committed_offsets(
        self: KafkaClients, group_id: str, topic: str, partitions: Iterable[int], timeout_s: float
    ) -> dict[int, int]:
        """Committed offsets of ``group_id``; partitions without a commit are left out."""
        committed = KafkaMetadata.committed_with_metadata(self, group_id, topic, partitions, timeout_s)
        return {partition: offset for partition, (offset, _) in committed.items()}

    def committed_with_metadata(
        self: KafkaClients, group_id: str, topic: str, partitions: Iterable[int], timeout_s: float
    ) -> dict[int, tuple[int, str]]:
        """Committed ``(offset, metadata)`` of ``group_id``; partitions without a commit are left out.

        Asked through a consumer of the group, not the admin API: librdkafka's admin
        ListConsumerGroupOffsets dereferences a null group handle when the coordinator is
        not ready yet (NOT_COORDINATOR, confluentinc/librdkafka#5040) and kills the process.
        """
        consumer = self.consumer(group_id)
        try:
            committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"committed offsets of {group_id}: {exc}") from exc
        finally:
            consumer.close()
        return {tp.partition: (tp.offset, tp.metadata or "") for tp in committed if tp.offset >= 0}

    def commit_offsets(
        self: KafkaClients, group_id: str, offsets: Mapping[tuple[str, int], int], metadata: Optional[str] = None
    ) -> None:
        """Commit ``(topic, partition) -> next offset`` for a group that never subscribes."""
        if not offsets:
            return
        consumer = self.consumer(group_id)
        try:
            consumer.commit(
                offsets=[
                    TopicPartition(t, p, o) if metadata is None else TopicPartition(t, p, o, metadata=metadata)
                    for (t, p), o in offsets.items()
                ],
                asynchronous=False,
            )
        except KafkaException as exc:
            raise KafkaUnavailableError(f"offset commit for {group_id} failed: {exc}") from exc
        finally:
            consumer.close()

    def max_message_bytes(self: KafkaClients, topic: str) -> int:
        """The largest record ``topic`` accepts (its ``max.message.bytes``), asked once per
        resource; the connection's setting when given, 1,000,000 if the broker will not say."""
        if self.connection.max_message_bytes is not None:
            return self.connection.max_message_bytes
        if topic not in self.cached_max_bytes():
            self.cached_max_bytes()[topic] = _topic_max_bytes(self, topic) or DEFAULT_MAX_MESSAGE_BYTES
        return self.cached_max_bytes()[topic]

    def create_topics(
        self: KafkaClients,
        names: Iterable[str],
        partitions: int,
        configs: Optional[Mapping[str, Mapping[str, str]]] = None,
        timeout_s: float = 30,
    ) -> None:
        """Create what is missing; ``configs`` holds topic settings by topic name."""
        configs = configs or {}
        new = [NewTopic(n, num_partitions=partitions, replication_factor=1, config=dict(configs.get(n, {}))) for n in names]
        admin = self.admin()
        for future in admin.create_topics(new, request_timeout=timeout_s).values():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        _wait_until_visible(admin, [t.topic for t in new], timeout_s)


def _wait_until_visible(admin: AdminClient, names: Sequence[str], timeout_s: float) -> None:
    """A KRaft broker acknowledges a new topic before its own metadata holds it; until then
    DescribeConfigs and produce answer "unknown topic", so wait for the broker to know them."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            known = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.1)).topics
        except KafkaException as exc:
            raise KafkaUnavailableError(f"metadata unavailable after creating topics: {exc.args[0]}") from exc
        missing = [n for n in names if n not in known or known[n].error is not None]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(f"topics created but not visible after {timeout_s} s: {missing[:5]}")
        time.sleep(0.1)


def _list_offsets(
    admin: AdminClient,
    topic: str,
    partitions: Sequence[int],
    spec: OffsetSpec,
    deadline: float,
) -> dict[int, int]:
    remaining = max(deadline - time.monotonic(), 0.1)
    futures = admin.list_offsets(
        {TopicPartition(topic, p): spec for p in partitions},
        isolation_level=IsolationLevel.READ_COMMITTED,
        request_timeout=remaining,
    )
    return {tp.partition: result_of(future, remaining, f"offsets of {topic}").offset for tp, future in futures.items()}


def _partitions(kafka: KafkaClients, admin: AdminClient, topic: str, timeout_s: float) -> list[int]:
    try:
        metadata = admin.list_topics(topic=topic, timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"broker {kafka.connection.bootstrap_servers} unreachable: {exc.args[0]}") from exc
    topic_meta = metadata.topics.get(topic)
    if topic_meta is None or topic_meta.error is not None:
        reason = topic_meta.error if topic_meta is not None else "not found"
        raise KafkaUnavailableError(f"topic {topic!r} unavailable: {reason}")
    return sorted(topic_meta.partitions)


def _topic_max_bytes(kafka: KafkaClients, topic: str) -> Optional[int]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = kafka.admin()  # held until the answer: a future dies with its client
    try:
        future = admin.describe_configs([resource], request_timeout=kafka.connection.request_timeout_s)[resource]
        entry = future.result(timeout=kafka.connection.request_timeout_s).get("max.message.bytes")
        return int(entry.value) if entry is not None and entry.value else None
    except Exception:  # noqa: BLE001 - not every cluster answers DescribeConfigs (Event Hubs)
        return None
