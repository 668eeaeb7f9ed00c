"""A CDC table's materialization in a process of its own, for the fault tests to kill -9: the
test's resources travel as plain settings (JSON on the command line) and are rebuilt here, so
the process writes under the same consumer group, schema and topics as the test's own runs.

    python -m pipeline_defs_tests.support.cdc_runs '<json from run_params>'
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from pipeline_defs.defs.cdc import table_parts
from pipeline_defs.defs.cdc.settings import CdcConfigResource, CdcSettings
from pipeline_defs.lib.attachments.file_store import FileStoreResource
from pipeline_defs.lib.cdc.model import TableSpec
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.postgres.resource import PostgresResource
from pipeline_defs.lib.settings import IngestConfigResource, IngestSettings, KafkaConnection, StorageSettings
from pipeline_defs_tests.support.stack import ROOT

MODULE = "pipeline_defs_tests.support.cdc_runs"


def run_params(resources: Mapping[str, Any], spec: TableSpec, tags: Mapping[str, str]) -> dict[str, Any]:
    """What a process needs to materialize ``spec``'s asset with ``resources`` and ``tags``."""
    return {
        "kafka": resources["kafka"].connection.model_dump(mode="json"),
        "files": resources["files"].storage.model_dump(mode="json"),
        "ingest": resources["ingest"].ingest.model_dump(mode="json"),
        "cdc": resources["cdc"].settings.model_dump(mode="json"),
        "table": spec.pg_table,
        "tags": dict(tags),
    }


def resources_of(params: Mapping[str, Any]) -> dict[str, object]:
    settings = CdcSettings(**params["cdc"])
    return {
        "kafka": KafkaResource(connection=KafkaConnection(**params["kafka"])),
        "files": FileStoreResource(storage=StorageSettings(**params["files"])),
        "ingest": IngestConfigResource(ingest=IngestSettings(**params["ingest"])),
        "cdc": CdcConfigResource(settings=settings),
        "cdc_postgres": PostgresResource(connection=settings.postgres),
    }


def materialize(params: Mapping[str, Any]) -> bool:
    settings = CdcSettings(**params["cdc"])
    (spec,) = [t.spec() for t in settings.tables if t.spec().pg_table == params["table"]]
    asset, _, _ = table_parts(spec)
    return dg.materialize([asset], tags=params["tags"], resources=resources_of(params)).success


@dataclass
class RunProcess:
    """A materialization in a process of its own; its output goes to ``log`` (a pipe could fill
    up and stop it somewhere other than where the test means to)."""

    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, params: Mapping[str, Any], log: Path) -> RunProcess:
        with log.open("wb") as out:
            command = [sys.executable, "-m", MODULE, json.dumps(params)]
            return cls(subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT), log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def assert_running(self) -> None:
        assert self.process.poll() is None, f"the run ended early ({self.process.returncode}):\n{self.output()}"

    def finish(self, timeout_s: float) -> None:
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the run did not finish in {timeout_s:.0f}s:\n{self.output()}") from None
        assert code == 0, f"the run failed ({code}):\n{self.output()}"

    def kill(self, timeout_s: float) -> None:
        """SIGKILL, if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout_s)


if __name__ == "__main__":
    sys.exit(0 if materialize(json.loads(sys.argv[1])) else 1)
