"""Fixtures over the real test stack (Kafka, Azurite, PostgreSQL) started by deploy/stack.sh.

The stack runs from ``.stack-test`` on its own ports, so it can run beside a dev stack.
Every test gets its own topics and its own lake directory.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg
import pytest

from pipeline_defs.lib.alerts import AlertWebhookResource
from pipeline_defs.lib.claimx.api import ClaimXApiResource
from pipeline_defs.lib.delta import DeltaLakeResource
from pipeline_defs.lib.downloader import AttachmentHttpResource
from pipeline_defs.lib.file_store import FileStoreResource
from pipeline_defs.lib.kafka import KafkaResource
from pipeline_defs.lib.offset_ranges import OffsetRange
from pipeline_defs.lib.settings import (
    ClaimXApiSettings,
    DownloadSettings,
    IngestSettings,
    KafkaConnection,
    PipelineConfigResource,
    StorageSettings,
    TopicNames,
)

from pipeline_defs.sim.attachment_host import AttachmentHost
from pipeline_defs.topics import create_pipeline_topics
from pipeline_defs.sim.claimx_api import ClaimXApiDouble
from pipeline_defs.sim.claimx_world import ClaimXWorld

ROOT = Path(__file__).resolve().parents[1]
TEST_STACK = {
    "STACK_DIR": str(ROOT / ".stack-test"),
    "KAFKA_PORT": os.environ.get("TEST_KAFKA_PORT", "19092"),
    "AZURITE_PORT": os.environ.get("TEST_AZURITE_PORT", "10010"),
    "PG_PORT": os.environ.get("TEST_PG_PORT", "55433"),
}


def stack(*args: str) -> None:
    """Run deploy/stack.sh against the test stack (idempotent: starts only what is down)."""
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "stack.sh"), *args],
        env={**os.environ, **TEST_STACK},
        check=True,
        stdin=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class TestStack:
    bootstrap_servers: str
    azurite_port: int
    pg_port: int


class FakeCredential:
    """Stands in for azure-identity: records the scopes asked for, returns a fixed token."""

    def __init__(self):
        self.scopes = []

    def get_token(self, scope):
        self.scopes.append(scope)
        return type("Token", (), {"token": "jwt-token", "expires_on": 1_900_000_000})()


@pytest.fixture(scope="session")
def test_stack() -> TestStack:
    stack("up")
    return TestStack(
        bootstrap_servers=f"127.0.0.1:{TEST_STACK['KAFKA_PORT']}",
        azurite_port=int(TEST_STACK["AZURITE_PORT"]),
        pg_port=int(TEST_STACK["PG_PORT"]),
    )


@pytest.fixture
def kafka(test_stack: TestStack) -> KafkaResource:
    return KafkaResource(
        connection=KafkaConnection(bootstrap_servers=test_stack.bootstrap_servers, request_timeout_s=5)
    )


# Retries wait seconds, not the production minutes.
TEST_RETRY_DELAYS_S = [3, 6]


@pytest.fixture
def topics(kafka: KafkaResource) -> Iterator[TopicNames]:
    """Fresh, uniquely named topics (3 partitions) for one test, retry topics included."""
    suffix = uuid.uuid4().hex[:8]
    names = TopicNames(
        **{field: f"test.{suffix}.{default}" for field, default in TopicNames().model_dump().items() if isinstance(default, str)},
        partitions=3,
    )
    config = PipelineConfigResource(topics=names, ingest=IngestSettings(retry_delays_s=TEST_RETRY_DELAYS_S))
    create_pipeline_topics(kafka, config, names.partitions)
    yield names
    # A broker kept between runs (KEEP_STACK=1) would otherwise pile up partitions, each
    # holding open files, until it runs out of descriptors.
    kafka.admin().delete_topics(config.all_topics(), operation_timeout=30)


@pytest.fixture
def lake(tmp_path: Path) -> DeltaLakeResource:
    return DeltaLakeResource(storage=StorageSettings(lake_root=str(tmp_path / "tables")))


@pytest.fixture
def pipeline_config(topics: TopicNames) -> PipelineConfigResource:
    return PipelineConfigResource(
        topics=topics,
        ingest=IngestSettings(
            consumer_group_prefix=f"test-{uuid.uuid4().hex[:8]}",
            max_events_per_run=400,
            max_runs_per_tick=10,
            max_runs_in_flight=10,  # tests execute the requested runs themselves, synchronously
            tick_budget_s=15,
            retry_delays_s=TEST_RETRY_DELAYS_S,
        ),
    )


@pytest.fixture
def files(tmp_path: Path) -> FileStoreResource:
    return FileStoreResource(storage=StorageSettings(files_root=str(tmp_path / "files")))


@pytest.fixture
def attachment_http() -> AttachmentHttpResource:
    """Test hosts: ``attachments.test`` (the local server, loopback allowed) and
    ``internal.test``, which resolves to a private address and must always be refused."""
    return AttachmentHttpResource(
        settings=DownloadSettings(
            allowed_hosts=["attachments.test", "internal.test", "files.example.com"],
            allow_http=True,
            allowed_ports=[],
            loopback_hosts=["attachments.test"],
            extra_hosts={"attachments.test": "127.0.0.1", "internal.test": "10.1.2.3"},
            read_timeout_s=2,
            connect_timeout_s=2,
            concurrency=8,
        )
    )


CLAIMX_TOKEN = "test-claimx-token"


@pytest.fixture
def media_host() -> Iterator[AttachmentHost]:
    """The ClaimX media host (presigned links point here as ``media.claimx.test``)."""
    server = AttachmentHost(host_name="media.claimx.test", file_size=16 * 1024).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
def claimx_world(media_host: AttachmentHost) -> ClaimXWorld:
    return ClaimXWorld(media_host.base_url)


@pytest.fixture
def claimx_api_double(claimx_world: ClaimXWorld) -> Iterator[ClaimXApiDouble]:
    server = ClaimXApiDouble(claimx_world, token=CLAIMX_TOKEN).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
def claimx_api(claimx_api_double: ClaimXApiDouble) -> ClaimXApiResource:
    """Short waits and a low circuit threshold, so storms play out in seconds."""
    return ClaimXApiResource(
        settings=ClaimXApiSettings(
            base_url=claimx_api_double.base_url,
            timeout_s=2,
            max_attempts=3,
            backoff_s=0.05,
            max_backoff_s=0.2,
            circuit_failure_threshold=3,
        ),
        token=CLAIMX_TOKEN,
    )


@pytest.fixture
def claimx_media_http() -> AttachmentHttpResource:
    return AttachmentHttpResource(
        settings=DownloadSettings(
            allowed_hosts=["media.claimx.test"],
            allowed_extensions=["jpg", "png", "mp4", "pdf"],
            allow_http=True,
            allowed_ports=[],
            loopback_hosts=["media.claimx.test"],
            extra_hosts={"media.claimx.test": "127.0.0.1"},
            read_timeout_s=2,
            connect_timeout_s=2,
        )
    )


@pytest.fixture
def resources(
    kafka: KafkaResource,
    lake: DeltaLakeResource,
    files: FileStoreResource,
    attachment_http: AttachmentHttpResource,
    pipeline_config: PipelineConfigResource,
    claimx_api: ClaimXApiResource,
    claimx_media_http: AttachmentHttpResource,
) -> dict[str, object]:
    """Every resource of the code location, on the test stack and the local doubles."""
    return {
        "source_kafka": kafka,
        "kafka": kafka,
        "lake": lake,
        "files": files,
        "attachment_http": attachment_http,
        "claimx_api": claimx_api,
        "claimx_media_http": claimx_media_http,
        "pipeline": pipeline_config,
        "alert_webhook": AlertWebhookResource(),
    }


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
