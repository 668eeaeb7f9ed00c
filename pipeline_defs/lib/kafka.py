"""Kafka as a Dagster resource: one interface for the local broker and Azure Event Hub.

Every broker call takes a timeout, so a sensor tick or a run never hangs on a dead broker.
Runs read with assign/seek (never subscribe + auto-commit) and commit consumer-group
offsets explicitly, after their Delta commit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import dagster as dg
from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec
from pydantic import PrivateAttr

from pipeline_defs.lib.guard import InfrastructureError
from pipeline_defs.lib.offset_ranges import OffsetRange, PartitionState
from pipeline_defs.lib.settings import KafkaConnection

_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
# What librdkafka and a Kafka topic accept unless told otherwise (Event Hubs: 1 MB, fixed).
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
# The producer's own ceiling sits above any topic's, so the topic's limit is the one that counts.
PRODUCER_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class KafkaUnavailableError(InfrastructureError):
    """The broker did not answer in time; transient, the caller may retry."""


class KafkaDeliveryError(InfrastructureError):
    """Produced records were not acknowledged by the broker."""


@dataclass(frozen=True)
class OutRecord:
    value: bytes
    key: Optional[bytes] = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


@dataclass
class ReadStats:
    messages: int = 0
    lost_to_retention: int = 0


class KafkaResource(dg.ConfigurableResource):
    """A Kafka cluster. ``sasl_password`` is bound with ``dg.EnvVar`` when the cluster needs it;
    OAUTHBEARER tokens come from azure-identity (``DefaultAzureCredential``)."""

    connection: KafkaConnection
    sasl_password: Optional[str] = None

    _credential: Any = PrivateAttr(default=None)
    _max_bytes: dict[str, int] = PrivateAttr(default_factory=dict)

    # ---- client construction ------------------------------------------------------------
    def client_config(self) -> dict[str, Any]:
        conn = self.connection
        config: dict[str, Any] = {
            "bootstrap.servers": conn.bootstrap_servers,
            "security.protocol": conn.security_protocol,
            "logger": _LIBRDKAFKA_LOG,
            "socket.timeout.ms": int(conn.request_timeout_s * 1000),
        }
        if conn.sasl_mechanism:
            config["sasl.mechanisms"] = conn.sasl_mechanism
        if conn.sasl_mechanism == "PLAIN":
            config["sasl.username"] = conn.sasl_username or ""
            config["sasl.password"] = self.sasl_password or ""
        if conn.sasl_mechanism == "OAUTHBEARER":
            if not conn.oauth_scope:
                raise ValueError("OAUTHBEARER needs connection.oauth_scope")
            config["oauth_cb"] = self._oauth_token
        return config

    def _oauth_token(self, _oauthbearer_config: str) -> tuple[str, float]:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        token = self._credential.get_token(self.connection.oauth_scope)
        return token.token, float(token.expires_on)

    def _serve_oauth(self, client: Any) -> Any:
        if self.connection.sasl_mechanism == "OAUTHBEARER":
            client.poll(0)  # librdkafka asks for the first token from poll()
        return client

    def admin(self) -> AdminClient:
        return self._serve_oauth(AdminClient(self.client_config()))

    def consumer(self, group_id: str, **overrides: Any) -> Consumer:
        config = {
            **self.client_config(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **overrides,
        }
        return self._serve_oauth(Consumer(config))

    def producer(self, **overrides: Any) -> Producer:
        config = {
            **self.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": PRODUCER_MAX_MESSAGE_BYTES,
            "message.timeout.ms": int(max(self.connection.request_timeout_s * 3, 30) * 1000),
            **overrides,
        }
        return self._serve_oauth(Producer(config))

    # ---- metadata -----------------------------------------------------------------------
    def partition_states(self, topic: str, timeout_s: float) -> dict[int, PartitionState]:
        """Low watermark and last stable offset of every partition of ``topic``."""
        deadline = time.monotonic() + timeout_s
        admin = self.admin()
        partitions = self._partitions(admin, topic, timeout_s)
        lows = self._list_offsets(admin, topic, partitions, OffsetSpec.earliest(), deadline)
        highs = self._list_offsets(admin, topic, partitions, OffsetSpec.latest(), deadline)
        return {p: PartitionState(low=lows[p], high=highs[p]) for p in partitions}

    def offsets_for_timestamp(
        self, topic: str, timestamp_ms: int, timeout_s: float
    ) -> dict[int, int]:
        """First offset at or after ``timestamp_ms`` per partition (the log end if none)."""
        deadline = time.monotonic() + timeout_s
        admin = self.admin()
        partitions = self._partitions(admin, topic, timeout_s)
        by_time = self._list_offsets(
            admin, topic, partitions, OffsetSpec.for_timestamp(timestamp_ms), deadline
        )
        ends = self._list_offsets(admin, topic, partitions, OffsetSpec.latest(), deadline)
        return {p: (by_time[p] if by_time[p] >= 0 else ends[p]) for p in partitions}

    def committed_offsets(
        self, group_id: str, topic: str, partitions: Iterable[int], timeout_s: float
    ) -> dict[int, int]:
        """Committed offsets of ``group_id``; partitions without a commit are left out.

        Asked through a consumer of the group, not the admin API: librdkafka's admin
        ListConsumerGroupOffsets dereferences a null group handle when the coordinator is
        not ready yet (NOT_COORDINATOR, confluentinc/librdkafka#5040) and kills the process.
        """
        consumer = self.consumer(group_id)
        try:
            committed = consumer.committed(
                [TopicPartition(topic, p) for p in partitions], timeout=timeout_s
            )
        except KafkaException as exc:
            raise KafkaUnavailableError(f"committed offsets of {group_id}: {exc}") from exc
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}

    def committed_with_metadata(
        self, group_id: str, topic: str, partitions: Iterable[int], timeout_s: float
    ) -> dict[int, tuple[int, str]]:
        """Committed ``(offset, metadata)`` of ``group_id``; partitions without a commit are left out."""
        consumer = self.consumer(group_id)
        try:
            committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"committed offsets of {group_id}: {exc}") from exc
        finally:
            consumer.close()
        return {tp.partition: (tp.offset, tp.metadata or "") for tp in committed if tp.offset >= 0}

    def commit_offsets(
        self, group_id: str, offsets: Mapping[tuple[str, int], int], metadata: Optional[str] = None
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

    def max_message_bytes(self, topic: str) -> int:
        """The largest record ``topic`` accepts (its ``max.message.bytes``), asked once per
        resource; the connection's setting when given, 1,000,000 if the broker will not say."""
        if self.connection.max_message_bytes is not None:
            return self.connection.max_message_bytes
        if topic not in self._max_bytes:
            self._max_bytes[topic] = self._topic_max_bytes(topic) or DEFAULT_MAX_MESSAGE_BYTES
        return self._max_bytes[topic]

    def _topic_max_bytes(self, topic: str) -> Optional[int]:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        admin = self.admin()  # held until the answer: a future dies with its client
        try:
            future = admin.describe_configs([resource], request_timeout=self.connection.request_timeout_s)[resource]
            entry = future.result(timeout=self.connection.request_timeout_s).get("max.message.bytes")
            return int(entry.value) if entry is not None and entry.value else None
        except Exception:  # noqa: BLE001 - not every cluster answers DescribeConfigs (Event Hubs)
            return None

    def create_topics(
        self,
        names: Iterable[str],
        partitions: int,
        configs: Optional[Mapping[str, Mapping[str, str]]] = None,
        timeout_s: float = 30,
    ) -> None:
        """Create what is missing; ``configs`` holds topic settings by topic name."""
        configs = configs or {}
        new = [
            NewTopic(n, num_partitions=partitions, replication_factor=1, config=dict(configs.get(n, {})))
            for n in names
        ]
        admin = self.admin()
        for future in admin.create_topics(new, request_timeout=timeout_s).values():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    # ---- data ---------------------------------------------------------------------------
    def read_ranges(
        self,
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
                if time.monotonic() > deadline:
                    raise KafkaUnavailableError(
                        f"timed out after {timeout_s}s reading {sorted(pending.values())}"
                    )
                room = min(batch_size - len(batch), 10_000)
                for message in consumer.consume(num_messages=room, timeout=1.0):
                    key = (message.topic(), message.partition())
                    wanted = pending.get(key)
                    if wanted is None:
                        continue
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise KafkaUnavailableError(f"read of {wanted} failed: {error}")
                        if message.offset() >= wanted.end:
                            del pending[key]
                        continue
                    if key not in first_seen:
                        first_seen.add(key)
                        stats.lost_to_retention += max(0, message.offset() - wanted.start)
                    if message.offset() < wanted.end:
                        batch.append(message)
                        stats.messages += 1
                    if message.offset() >= wanted.end - 1:
                        del pending[key]
                        consumer.pause([TopicPartition(*key)])
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch
        finally:
            consumer.close()

    def produce(self, topic: str, records: Iterable[OutRecord], timeout_s: float = 60) -> int:
        """Produce and wait for every acknowledgement; raise if any record is not acknowledged."""
        producer = self.producer()
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
            raise KafkaDeliveryError(
                f"{unsent} records unsent and {len(failures)} failed for {topic}: {failures[:3]}"
            )
        return count

    # ---- helpers ------------------------------------------------------------------------
    def _partitions(self, admin: AdminClient, topic: str, timeout_s: float) -> list[int]:
        try:
            metadata = admin.list_topics(topic=topic, timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"broker {self.connection.bootstrap_servers} unreachable: {exc.args[0]}"
            ) from exc
        topic_meta = metadata.topics.get(topic)
        if topic_meta is None or topic_meta.error is not None:
            reason = topic_meta.error if topic_meta is not None else "not found"
            raise KafkaUnavailableError(f"topic {topic!r} unavailable: {reason}")
        return sorted(topic_meta.partitions)

    def _list_offsets(
        self,
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
        return {
            tp.partition: _result(future, remaining, f"offsets of {topic}").offset
            for tp, future in futures.items()
        }


@dataclass(frozen=True)
class Topic:
    """A topic on a cluster, for records a sink produces."""

    kafka: KafkaResource
    name: str

    def send(self, records: Iterable[OutRecord]) -> int:
        return self.kafka.produce(self.name, records)


def _result(future: Any, timeout_s: float, what: str) -> Any:
    try:
        return future.result(timeout=timeout_s)
    except Exception as exc:  # KafkaException or a timeout: both mean "broker not usable now"
        raise KafkaUnavailableError(f"{what}: {exc}") from exc
