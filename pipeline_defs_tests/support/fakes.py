"""Stand-ins that keep their interface: a credential that records its scopes, and a Kafka
cluster held in memory for sensor unit tests (planning, backpressure, gating, cursors)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pipeline_defs.lib.kafka.clients import KafkaUnavailableError
from pipeline_defs.lib.kafka.ranges import PartitionState
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import KafkaConnection


class FakeCredential:
    """Stands in for azure-identity: records the scopes asked for, returns a fixed token."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, scope: str):
        self.scopes.append(scope)
        return type("Token", (), {"token": "jwt-token", "expires_on": 1_900_000_000})()


@dataclass
class FakeCluster:
    states: dict[str, dict[int, PartitionState]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], tuple[int, str]] = field(default_factory=dict)
    down: bool = False


# Dagster rebuilds resources from their config when it hands them to a sensor or a run, so a
# fake's state lives here, under the cluster's name, not on the resource object.
_CLUSTERS: dict[str, FakeCluster] = {}


class FakeKafka(KafkaResource):
    """A cluster in memory: the partition states a test sets, committed offsets, and a switch
    that makes every call fail like an unreachable broker."""

    connection: KafkaConnection = KafkaConnection(bootstrap_servers="fake:9092")
    cluster: str = ""

    @classmethod
    def new(cls) -> FakeKafka:
        name = uuid.uuid4().hex
        _CLUSTERS[name] = FakeCluster()
        return cls(cluster=name)

    @property
    def _state(self) -> FakeCluster:
        return _CLUSTERS[self.cluster]

    def with_topic(self, topic: str, highs: Mapping[int, int], low: int = 0) -> FakeKafka:
        self._state.states[topic] = {p: PartitionState(low, high) for p, high in highs.items()}
        return self

    def go_down(self) -> None:
        self._state.down = True

    def _check(self) -> None:
        if self._state.down:
            raise KafkaUnavailableError("fake broker down")

    def partition_states(self, topic: str, timeout_s: float) -> dict[int, PartitionState]:
        self._check()
        return dict(self._state.states[topic])

    def offsets_for_timestamp(self, topic: str, timestamp_ms: int, timeout_s: float) -> dict[int, int]:
        self._check()
        return {p: s.high for p, s in self._state.states[topic].items()}

    def committed_offsets(self, group_id: str, topic: str, partitions: Iterable[int], timeout_s: float) -> dict[int, int]:
        return {p: offset for p, (offset, _) in self.committed_with_metadata(group_id, topic, partitions, timeout_s).items()}

    def committed_with_metadata(
        self, group_id: str, topic: str, partitions: Iterable[int], timeout_s: float
    ) -> dict[int, tuple[int, str]]:
        self._check()
        committed = self._state.committed
        return {p: committed[(group_id, topic, p)] for p in partitions if (group_id, topic, p) in committed}

    def commit_offsets(self, group_id: str, offsets: Mapping[tuple[str, int], int], metadata: str | None = None) -> None:
        self._check()
        for (topic, partition), offset in offsets.items():
            self._state.committed[(group_id, topic, partition)] = (offset, metadata or "")
