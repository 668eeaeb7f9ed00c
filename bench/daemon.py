"""The deployed path for benchmarks: ``dagster-daemon`` (sensors, run queue, run launcher,
run monitoring and retries) on a PostgreSQL-backed instance, with its own topics, lake and
files, exactly as ``deploy/run.sh`` runs it minus the webserver."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import dagster as dg
import polars as pl
import psycopg2

from pipeline_defs.cli.topics import create_pipeline_topics
from pipeline_defs.domains import PipelineSettings, build_resources, pipeline_topics
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.settings import CoreSettings, StorageSettings
from pipeline_defs_tests.support.stack import AZURITE_KEY, ROOT, LocalStack
from pipeline_defs_tests.support.topics import topic_env, unique_topics

BIN = ROOT / ".venv" / "bin"


@dataclass
class PipelineUnderTest:
    name: str
    workdir: Path
    env: dict[str, str]
    settings: CoreSettings
    topics: SimpleNamespace  # topics.xact.events, topics.claimx.enrichment_dlq, ...
    dagster_home: Path
    daemon: Optional[subprocess.Popen] = None
    code_server: Optional[subprocess.Popen] = None
    resources: dict = field(default_factory=dict)

    @property
    def lake(self) -> DeltaLakeResource:
        return DeltaLakeResource(storage=StorageSettings(lake_root=self.env["PIPELINE_STORAGE__LAKE_ROOT"]))

    def rows(self, table: str, columns: list[str]) -> pl.DataFrame:
        scan = self.lake.scan(table)
        return pl.DataFrame() if scan is None else scan.select(columns).collect()

    def count(self, table: str) -> int:
        scan = self.lake.scan(table)
        return 0 if scan is None else scan.select(pl.len()).collect().item()

    def instance(self) -> dg.DagsterInstance:
        os.environ["DAGSTER_PG_URL"] = self.env["DAGSTER_PG_URL"]
        return dg.DagsterInstance.from_config(str(self.dagster_home))

    def start_daemon(self) -> None:
        """A long-lived code server, as deployed, and the daemon pointed at it: a daemon that
        spawns its own code server replaces it every minute (its workspace reload), which
        alone cost the idle pipeline more CPU than its target."""
        port = free_port()
        self.code_server = self._spawn(
            "code_server",
            "dagster",
            "api",
            "grpc",
            "-m",
            "pipeline_defs.definitions",
            "--location-name",
            "pipeline_defs",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        )
        health = [str(BIN / "dagster"), "api", "grpc-health-check", "-h", "127.0.0.1", "-p", str(port)]
        healthy = lambda: subprocess.run(health, capture_output=True, env=self.env).returncode == 0  # noqa: E731
        assert wait_until(healthy, timeout_s=180, every_s=1), f"the code server on port {port} did not come up"
        self.daemon = self._spawn("daemon", "dagster-daemon", "run", "--grpc-host", "127.0.0.1", "--grpc-port", str(port))

    def _spawn(self, name: str, *command: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the process writes to it for its whole life
        return subprocess.Popen(
            [str(BIN / command[0]), *command[1:]],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pipeline_pids(self) -> list[int]:
        """The daemon and the code server (whose children are the run workers)."""
        return [p.pid for p in (self.daemon, self.code_server) if p is not None]

    def stop_daemon(self) -> None:
        for process in (self.daemon, self.code_server):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        # runs launched by the daemon live in their own processes
        for pid in run_processes(self.dagster_home):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> Optional[int]:
    """The pid of the process executing a run, from the run's own "Started process" event."""
    for event in instance.all_logs(run_id):
        found = re.search(r"process \(pid: (\d+)\)", event.message or "")
        if found:
            return int(found.group(1))
    return None


def run_processes(dagster_home: Path) -> list[int]:
    """Processes whose environment names this DAGSTER_HOME (the daemon's run workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"DAGSTER_HOME={dagster_home}".encode() in environ:
            found.append(int(proc.name))
    return found


@contextmanager
def pipeline(
    stack: LocalStack,
    *,
    max_events_per_run: int = 100_000,
    max_runs_per_tick: int = 4,
    retry_delays_s: tuple[int, ...] = (5, 10, 20, 40),
    files_on_azurite: bool = False,
    streaming: bool = False,
    writers: int = 1,
    extra_env: Optional[dict[str, str]] = None,
) -> Iterator[PipelineUnderTest]:
    """``writers``: ``ingest.writers_per_table`` and the instance's pool limit together."""
    name = f"b{uuid.uuid4().hex[:8]}"
    topics = unique_topics(name)
    workdir = stack.runs_dir / name
    dagster_home = workdir / "dagster_home"
    dagster_home.mkdir(parents=True)
    instance_yaml, pools_set = re.subn(
        r"(?m)^(\s+default_limit:) \d+$", rf"\g<1> {writers}", (ROOT / "deploy" / "dagster" / "dagster.yaml").read_text()
    )
    assert pools_set == 1, "deploy/dagster/dagster.yaml no longer sets concurrency.pools.default_limit"
    (dagster_home / "dagster.yaml").write_text(instance_yaml)
    connection = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="postgres", dbname="postgres")
    connection.autocommit = True
    connection.cursor().execute(f"CREATE DATABASE dagster_{name}")
    connection.close()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_URL": stack.dagster_pg_url(f"dagster_{name}"),
        "PIPELINE_CONFIG_FILE": "/nonexistent.yaml",
        "PIPELINE_SOURCE_KAFKA__BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        **topic_env(topics),
        "PIPELINE_INGEST__TOPIC_PARTITIONS": "6",
        "PIPELINE_STORAGE__LAKE_ROOT": str(workdir / "tables"),
        "PIPELINE_INGEST__CONSUMER_GROUP_PREFIX": name,
        "PIPELINE_INGEST__MAX_EVENTS_PER_RUN": str(max_events_per_run),
        "PIPELINE_INGEST__MAX_RUNS_PER_TICK": str(max_runs_per_tick),
        "PIPELINE_INGEST__RETRY_DELAYS_S": json.dumps(list(retry_delays_s)),
        "PIPELINE_INGEST__STREAM__ENABLED": json.dumps(streaming),
        "PIPELINE_INGEST__WRITERS_PER_TABLE": str(writers),
        "PIPELINE_XACT__DOWNLOADS__ALLOWED_HOSTS": json.dumps(["attachments.bench"]),
        "PIPELINE_XACT__DOWNLOADS__ALLOW_HTTP": "true",
        "PIPELINE_XACT__DOWNLOADS__ALLOWED_PORTS": "[]",
        "PIPELINE_XACT__DOWNLOADS__LOOPBACK_HOSTS": json.dumps(["attachments.bench"]),
        "PIPELINE_XACT__DOWNLOADS__EXTRA_HOSTS": json.dumps({"attachments.bench": "127.0.0.1"}),
        **(extra_env or {}),
    }
    if files_on_azurite:
        env |= {
            "PIPELINE_STORAGE__FILES_ROOT": f"az://files/{name}",
            "PIPELINE_STORAGE__AZURE_ACCOUNT_NAME": "devstoreaccount1",
            "PIPELINE_STORAGE__AZURE_ENDPOINT": stack.azurite_endpoint,
            "PIPELINE_STORAGE__AZURE_ACCOUNT_KEY_ENV": "BENCH_AZURITE_KEY",
            "BENCH_AZURITE_KEY": AZURITE_KEY,
        }
    else:
        env["PIPELINE_STORAGE__FILES_ROOT"] = str(workdir / "files")
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        settings = PipelineSettings()
        resources = build_resources(settings)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    run = PipelineUnderTest(name, workdir, env, settings, topics, dagster_home, resources=resources)
    create_pipeline_topics(
        resources["kafka"], pipeline_topics(settings), settings.ingest.topic_partitions, settings.ingest.dlq_max_message_bytes
    )
    try:
        yield run
    finally:
        run.stop_daemon()


def wait_until(predicate, timeout_s: float, every_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()


def free_port() -> int:
    """A port the kernel has just handed out and released (for a server started right after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
