"""What every part of the Kafka resource needs: its clients, and the errors that mean the
cluster (not a record) is the problem."""

from __future__ import annotations

from typing import Any, Protocol

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from pipeline_defs.lib.ingest.guard import InfrastructureError
from pipeline_defs.lib.settings import KafkaConnection


class KafkaUnavailableError(InfrastructureError):
    """The broker did not answer in time; transient, the caller may retry."""


class KafkaDeliveryError(InfrastructureError):
    """Produced records were not acknowledged by the broker."""


class KafkaClients(Protocol):
    """A configured cluster: where it is, and its admin, consumer and producer clients."""

    @property
    def connection(self) -> KafkaConnection: ...

    def admin(self) -> AdminClient: ...

    def consumer(self, group_id: str, **overrides: Any) -> Consumer: ...

    def producer(self, **overrides: Any) -> Producer: ...

    def shared_producer(self) -> Producer: ...

    def cached_max_bytes(self) -> dict[str, int]: ...

    def raise_if_refused(self) -> None: ...


def result_of(future: Any, timeout_s: float, what: str) -> Any:
    try:
        return future.result(timeout=timeout_s)
    except Exception as exc:
        raise KafkaUnavailableError(f"{what}: {exc}") from exc
