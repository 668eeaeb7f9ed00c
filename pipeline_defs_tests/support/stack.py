"""A local stack (``deploy/stack.sh``) on a directory and ports of its own: the test stack beside
a dev stack, the benchmark stack beside both."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline_defs.lib.attachments.file_store import FileStoreResource
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import KafkaConnection, StorageSettings

ROOT = Path(__file__).resolve().parents[2]
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's documented development key: not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# The scope the Event Hub stand-in requires in every token (deploy/stack.sh's EVENTHUB_SCOPE).
EVENTHUB_SCOPE = "https://local-eventhub.servicebus.windows.net/.default"


@dataclass(frozen=True)
class LocalStack:
    directory: Path
    kafka_port: int
    azurite_port: int
    pg_port: int

    @classmethod
    def named(cls, name: str, prefix: str, kafka: int, azurite: int, pg: int) -> LocalStack:
        """``.stack-<name>``, ports overridable by ``<PREFIX>_KAFKA_PORT`` and friends."""
        return cls(
            ROOT / f".stack-{name}",
            int(os.environ.get(f"{prefix}_KAFKA_PORT", kafka)),
            int(os.environ.get(f"{prefix}_AZURITE_PORT", azurite)),
            int(os.environ.get(f"{prefix}_PG_PORT", pg)),
        )

    @property
    def pg_pool_port(self) -> int:
        """PgBouncer in front of PostgreSQL (deploy/stack.sh): where Dagster's storage connects."""
        return self.pg_port + 1000

    def dagster_pg_url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.pg_pool_port}/{database}"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def eventhub_port(self) -> int:
        """The Event Hub stand-in's SASL_SSL listener (its controller is on the next port)."""
        return self.kafka_port + 2

    @property
    def eventhub_bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.eventhub_port}"

    @property
    def eventhub_ca_path(self) -> Path:
        """The test CA that signed the stand-in's certificate."""
        return self.directory / "eventhub" / "tls" / "ca.pem"

    @property
    def eventhub_scope(self) -> str:
        return EVENTHUB_SCOPE

    @property
    def azurite_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.azurite_port}/{AZURITE_ACCOUNT}"

    @property
    def runs_dir(self) -> Path:
        return self.directory / "runs"

    def run(self, *args: str) -> None:
        """``deploy/stack.sh`` against this stack (idempotent: starts only what is down)."""
        env = {
            "STACK_DIR": str(self.directory),
            "KAFKA_PORT": str(self.kafka_port),
            "AZURITE_PORT": str(self.azurite_port),
            "PG_PORT": str(self.pg_port),
            "PG_POOL_PORT": str(self.pg_pool_port),
            "EVENTHUB_PORT": str(self.eventhub_port),
            "EVENTHUB_CONTROLLER_PORT": str(self.eventhub_port + 1),
            "EVENTHUB_SCOPE": EVENTHUB_SCOPE,
        }
        subprocess.run(
            ["bash", str(ROOT / "deploy" / "stack.sh"), *args], env={**os.environ, **env}, check=True, stdin=subprocess.DEVNULL
        )

    def kafka(self, request_timeout_s: float = 10.0) -> KafkaResource:
        return KafkaResource(
            connection=KafkaConnection(bootstrap_servers=self.bootstrap_servers, request_timeout_s=request_timeout_s)
        )

    def azurite_files(self, container: str = "files", prefix: str = "Files") -> FileStoreResource:
        return FileStoreResource(
            storage=StorageSettings(
                files_root=f"az://{container}/{prefix}", azure_account_name=AZURITE_ACCOUNT, azure_endpoint=self.azurite_endpoint
            ),
            azure_account_key=AZURITE_KEY,
        )


TEST_STACK = LocalStack.named("test", "TEST", kafka=19092, azurite=10010, pg=15433)
BENCH_STACK = LocalStack.named("bench", "BENCH", kafka=29092, azurite=10020, pg=25434)
