"""Records in and out of a cluster: exactly the messages of some offset ranges, and produced
records acknowledged one and all."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Optional, Protocol

from confluent_kafka import KafkaError, Message, TopicPartition

from pipeline_defs.lib.kafka.clients import KafkaClients, KafkaDeliveryError, KafkaUnavailableError
from pipeline_defs.lib.kafka.ranges import OffsetRange


@dataclass(frozen=True)
class OutRecord:
    value: bytes
    key: Optional[bytes] = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


@dataclass
class ReadStats:
    messages: int = 0
    lost_to_retention: int = 0


def position(message: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed message (a consumed message has all three)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None, "not a consumed message"
    return topic, partition, offset


class KafkaRecords:
    """Reading ranges and producing records; mixed into ``KafkaResource``."""

    def read_ranges(
        self: KafkaClients,
        ranges: Sequence[OffsetRange],
        group_id: str,
        batch_size: int,
        timeout_s: float,
        stats: Optional[ReadStats] = None,
    ) -> Iterator[list[Message]]:
        """Yield the messages of exactly ``ranges`` in batches of at most ``batch_size``.

        Offsets that retention already deleted are counted in ``stats.lost_to_retention``.
        Raises ``KafkaUnavailableError`` if the ranges cannot be read within ``timeout_s``.
        """
        stats = stats if stats is not None else ReadStats()
        pending = {(r.topic, r.partition): r for r in ranges if r.size > 0}
        if not pending:
            return
        consumer = self.consumer(group_id, **{"enable.partition.eof": True})
        deadline = time.monotonic() + timeout_s
        first_seen: set[tuple[str, int]] = set()
        try:
            consumer.assign([TopicPartition(t, p, r.start) for (t, p), r in pending.items()])
            batch: list[Message] = []
            while pending:
                self.raise_if_refused()
                if time.monotonic() > deadline:
                    raise KafkaUnavailableError(f"timed out after {timeout_s}s reading {sorted(pending.values())}")
                room = min(batch_size - len(batch), 10_000)
                for message in consumer.consume(num_messages=room, timeout=1.0):
                    topic, partition, offset = position(message)
                    key = (topic, partition)
                    wanted = pending.get(key)
                    if wanted is None:
                        continue
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise KafkaUnavailableError(f"read of {wanted} failed: {error}")
                        if offset >= wanted.end:
                            del pending[key]
                        continue
                    if key not in first_seen:
                        first_seen.add(key)
                        stats.lost_to_retention += max(0, offset - wanted.start)
                    if offset < wanted.end:
                        batch.append(message)
                        stats.messages += 1
                    if offset >= wanted.end - 1:
                        del pending[key]
                        consumer.pause([TopicPartition(topic, partition)])
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch
        finally:
            consumer.close()

    def produce(self: KafkaClients, topic: str, records: Iterable[OutRecord], timeout_s: float = 60) -> int:
        """Produce and wait for every acknowledgement; raise if any record is not acknowledged."""
        producer = self.shared_producer()
        failures: list[str] = []

        def on_delivery(err: Optional[KafkaError], _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        count = 0
        for record in records:
            while True:
                try:
                    producer.produce(
                        topic,
                        value=record.value,
                        key=record.key,
                        headers=list(record.headers),
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            count += 1
        unsent = producer.flush(timeout_s)
        if unsent or failures:
            self.raise_if_refused()
            raise KafkaDeliveryError(f"{unsent} records unsent and {len(failures)} failed for {topic}: {failures[:3]}")
        return count


class Producing(Protocol):
    def produce(self, topic: str, records: Iterable[OutRecord], timeout_s: float = 60) -> int: ...


@dataclass(frozen=True)
class Topic:
    """A topic on a cluster, for records a sink produces."""

    kafka: Producing
    name: str

    def send(self, records: Iterable[OutRecord]) -> int:
        return self.kafka.produce(self.name, records)
