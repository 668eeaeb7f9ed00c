"""Fixtures over the real test stack (Kafka, Azurite, PostgreSQL) started by ``deploy/stack.sh``
on its own directory and ports, so it can run beside a dev stack. Every test gets its own
topics and its own lake directory. Tests that need the stack are marked ``stack``."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from pipeline_defs.cli.topics import create_pipeline_topics
from pipeline_defs.domains import DOMAINS, pipeline_topics
from pipeline_defs.lib.attachments.file_store import FileStoreResource
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.health.alerts import AlertWebhookResource
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import IngestConfigResource, IngestSettings, StorageSettings
from pipeline_defs_tests.support.stack import TEST_STACK, LocalStack
from pipeline_defs_tests.support.topics import unique_topics

# Retries wait seconds, not the production minutes.
TEST_RETRY_DELAYS_S = [3, 6]
PARTITIONS = 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reaches the stack, however indirectly, is a ``stack`` test; the rest are
    the fast lane (``pytest -m "not stack"``)."""
    for item in items:
        if "test_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def test_stack() -> LocalStack:
    TEST_STACK.run("up")
    return TEST_STACK


@pytest.fixture
def kafka(test_stack: LocalStack) -> KafkaResource:
    return test_stack.kafka(request_timeout_s=5)


def settings_with_topics(topics: SimpleNamespace, ingest: IngestSettings):
    """Settings holding ``topics`` (only their names matter to the registry's topic list)."""
    from pipeline_defs.domains import PipelineSettings

    sections = {
        domain.name: domain.settings(topics=getattr(topics, domain.name))
        for domain in DOMAINS
        if hasattr(topics, domain.name) and domain.settings
    }
    return PipelineSettings(ingest=ingest, **sections)  # type: ignore[arg-type]  # the domains' own sections


@pytest.fixture
def topics(kafka: KafkaResource) -> Iterator[SimpleNamespace]:
    """Fresh, uniquely named topics (3 partitions) of every domain for one test, retry topics
    and sized DLQs included: ``topics.xact.events``, ``topics.claimx.enrichment_dlq``, ..."""
    names = unique_topics(f"test.{uuid.uuid4().hex[:8]}")
    plan = pipeline_topics(settings_with_topics(names, IngestSettings(retry_delays_s=TEST_RETRY_DELAYS_S)))
    created = create_pipeline_topics(kafka, plan, PARTITIONS, IngestSettings().dlq_max_message_bytes)
    yield names
    # A broker kept between runs (KEEP_STACK=1) would otherwise pile up partitions, each
    # holding open files, until it runs out of descriptors.
    kafka.admin().delete_topics(created, operation_timeout=30)


@pytest.fixture
def lake(tmp_path: Path) -> DeltaLakeResource:
    return DeltaLakeResource(storage=StorageSettings(lake_root=str(tmp_path / "tables")))


@pytest.fixture
def files(tmp_path: Path) -> FileStoreResource:
    return FileStoreResource(storage=StorageSettings(files_root=str(tmp_path / "files")))


@pytest.fixture
def ingest_config() -> IngestConfigResource:
    return IngestConfigResource(
        ingest=IngestSettings(
            consumer_group_prefix=f"test-{uuid.uuid4().hex[:8]}",
            max_events_per_run=400,
            max_runs_per_tick=10,
            max_runs_in_flight=10,  # tests execute the requested runs themselves, synchronously
            tick_budget_s=15,
            retry_delays_s=TEST_RETRY_DELAYS_S,
        )
    )


@pytest.fixture
def resources(request: pytest.FixtureRequest, kafka, lake, files, ingest_config) -> dict[str, object]:
    """Every resource of the code location, on the test stack and the local doubles: the
    shared ones here, each registered domain's from its ``<domain>_resources`` fixture."""
    shared: dict[str, object] = {
        "source_kafka": kafka,
        "kafka": kafka,
        "lake": lake,
        "files": files,
        "ingest": ingest_config,
        "alert_webhook": AlertWebhookResource(),
    }
    for domain in DOMAINS:
        with contextlib.suppress(pytest.FixtureLookupError):  # a domain with no resources of its own
            shared.update(request.getfixturevalue(f"{domain.name}_resources"))
    return shared


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def consume_all(kafka: KafkaResource) -> Callable[[str], list]:
    """Every message currently in a topic, read with a throwaway group."""

    def _consume(topic: str) -> list:
        states = kafka.partition_states(topic, 10)
        ranges = [OffsetRange(topic, p, s.low, s.high) for p, s in states.items()]
        batches = kafka.read_ranges(ranges, f"reader-{uuid.uuid4().hex}", 10_000, 30)
        return [message for batch in batches for message in batch]

    return _consume
