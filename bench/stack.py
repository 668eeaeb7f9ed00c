"""The benchmark stack: deploy/stack.sh on its own directory and ports."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline_defs.lib.file_store import FileStoreResource
from pipeline_defs.lib.kafka import KafkaResource
from pipeline_defs.lib.settings import KafkaConnection, StorageSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BENCH_STACK = {
    "STACK_DIR": str(ROOT / ".stack-bench"),
    "KAFKA_PORT": os.environ.get("BENCH_KAFKA_PORT", "29092"),
    "AZURITE_PORT": os.environ.get("BENCH_AZURITE_PORT", "10020"),
    "PG_PORT": os.environ.get("BENCH_PG_PORT", "55434"),
}


def stack(*args: str) -> None:
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "stack.sh"), *args],
        env={**os.environ, **BENCH_STACK},
        check=True,
        stdin=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class BenchStack:
    bootstrap_servers: str = f"127.0.0.1:{BENCH_STACK['KAFKA_PORT']}"
    azurite_endpoint: str = f"http://127.0.0.1:{BENCH_STACK['AZURITE_PORT']}/{AZURITE_ACCOUNT}"
    pg_port: int = int(BENCH_STACK["PG_PORT"])
    runs_dir: Path = ROOT / ".stack-bench" / "runs"

    def kafka(self) -> KafkaResource:
        return KafkaResource(connection=KafkaConnection(bootstrap_servers=self.bootstrap_servers))

    def azurite_files(self, container: str = "files") -> FileStoreResource:
        return FileStoreResource(
            storage=StorageSettings(
                files_root=f"az://{container}/Files",
                azure_account_name=AZURITE_ACCOUNT,
                azure_endpoint=self.azurite_endpoint,
            ),
            azure_account_key=AZURITE_KEY,
        )
