"""The settings every domain shares, and how a domain's own section joins them.

Precedence: environment (``PIPELINE_<SECTION>__<FIELD>``) > ``config.yaml`` > defaults.
The YAML file is ``$PIPELINE_CONFIG_FILE`` when set, else ``./config.yaml`` when present.
Secrets never live here: a section names the environment variable that holds one
(``*_env`` fields) and the resource binds it with ``dg.EnvVar`` so Dagster resolves it
at run time and shows only the variable's name. Each domain registers its own section
(``PIPELINE_XACT__TOPICS__EVENTS``, ``PIPELINE_CLAIMX__API__BASE_URL``, ...); the code
location's settings model is the shared one plus those sections (``settings_model``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Optional, TypeVar

import dagster as dg
from pydantic import Field, create_model
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_FILE_ENV = "PIPELINE_CONFIG_FILE"


class KafkaConnection(dg.Config):
    """How to reach one Kafka cluster: the local broker, or Azure Event Hub's Kafka endpoint."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: Optional[str] = None  # PLAIN | OAUTHBEARER
    sasl_username: Optional[str] = None  # "$ConnectionString" for Event Hub with PLAIN
    sasl_password_env: Optional[str] = None  # env var holding the password/connection string
    oauth_scope: Optional[str] = None  # e.g. https://<namespace>.servicebus.windows.net/.default
    oauth_token_file: Optional[str] = None  # a bearer token in a file (rotated by a sidecar); else azure-identity
    ssl_ca_location: Optional[str] = None  # CA bundle (PEM) for SSL/SASL_SSL; None: the system's (Event Hubs)
    request_timeout_s: float = 10.0
    # The largest record the cluster's topics accept; None: ask each topic (DescribeConfigs).
    max_message_bytes: Optional[int] = None


class StorageSettings(dg.Config):
    """Where Delta tables live: a local path (embedded default), ``az://`` or ``abfss://``."""

    lake_root: str = ".lake/tables"
    azure_account_name: Optional[str] = None
    azure_account_key_env: Optional[str] = None  # shared key (Azurite); else Azure identity
    azure_endpoint: Optional[str] = None  # custom blob endpoint, e.g. Azurite's http URL
    # Where attachments are uploaded: a local path, az://<container>/<prefix> (Blob, Azurite)
    # or abfss://<workspace>@onelake.dfs.fabric.microsoft.com/<lakehouse>.Lakehouse/Files
    files_root: str = ".lake/files"


class DownloadSettings(dg.Config):
    """How files are fetched from one kind of host, and which URLs may be fetched at all."""

    concurrency: int = 50
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    download_deadline_s: float = 900.0  # a whole file, however slowly the host drips it
    chunk_bytes: int = 1024 * 1024
    spool_bytes: int = 1024 * 1024  # bodies up to this stay in memory; larger ones go to disk
    max_file_bytes: int = 5 * 1024**3
    max_redirects: int = 5
    allowed_hosts: list[str] = []  # a host also allows its subdomains
    allowed_extensions: list[str] = ["pdf", "xml", "jpg", "jpeg", "png", "gif", "tif", "tiff"]
    allow_http: bool = False
    allowed_ports: list[int] = [443]  # empty: any port
    loopback_hosts: list[str] = []  # local stack and tests only; production leaves it empty
    extra_hosts: dict[str, str] = {}  # host -> IP, like curl --resolve
    circuit_failure_threshold: int = 5
    circuit_reset_s: float = 60.0
    temp_dir: Optional[str] = None
    temp_disk_bytes: int = 8 * 1024**3  # temporary files of one run's downloads, at most


class StreamSettings(dg.Config):
    """The streaming path: one long-running run per Kafka-fed asset, committing micro-batches."""

    enabled: bool = True  # the stream sensors keep a run alive per asset; off: batch runs only
    batch_max_wait_s: float = 1.0  # a micro-batch of events is committed after this long ...
    batch_max_events: int = 100_000  # ... or this many records (a backlog drains in big commits)
    # Task feeds (downloads, enrichment) MERGE into their tables, a cost paid per micro-batch
    # whatever its size; their latency budget (10 s) affords fewer, larger batches.
    task_batch_max_wait_s: float = 2.0
    offset_commit_interval_s: float = 5.0  # consumer-group offsets (for Kafka's lag tools; Delta holds the truth)
    report_interval_s: float = 60.0  # one materialization (and check evaluation) per day and interval
    max_run_s: float = 6 * 3600.0  # a run ends cleanly after this long and the sensor starts the next
    gate_poll_s: float = 5.0  # how often a stream behind a failed blocking check looks again


class IngestSettings(dg.Config):
    """Bounds for the Kafka offset-range sensors and the runs they launch."""

    consumer_group_prefix: str = "pipeline"
    max_events_per_run: int = 50_000
    tasks_per_commit: int = 5_000  # download and enrichment runs commit (and show progress) this often
    max_runs_per_tick: int = 4
    # Backpressure: a sensor plans nothing while its job has this many runs queued or running,
    # so under load runs grow (up to max_events_per_run) instead of queueing.
    max_runs_in_flight: int = 2
    # Concurrent writer runs of one table, each on its slot of the topic's partitions (p mod n):
    # raise it with the pools' limit (deploy/dagster/dagster.yaml); README "Scale-out".
    writers_per_table: int = Field(default=1, ge=1)
    tick_budget_s: float = 20.0
    # A stalled range: after this many failed runs in a row a sensor pauses, planning one probe
    # run per interval until a run succeeds again (0: never pause).
    stall_after_failed_runs: int = 3
    stall_probe_interval_s: float = 300.0
    # Stream health: a consumer with lag and no successful run for this long is stalled; a lag
    # this much above the one its last run saw is growing.
    stale_after_min: float = 15.0
    lag_growth_warn: int = 10_000
    start_from: str = "earliest"  # earliest | latest, for partitions with no committed offset
    dedup_window_days: int = 1
    # Transient download failures wait this long in retry topics, one topic per delay;
    # after the last one they go to the DLQ. Default: the seeds' 5, 10, 20, 40 minutes.
    retry_delays_s: list[int] = [300, 600, 1200, 2400]
    failed_attachment_ratio_warn: float = 0.2
    topic_partitions: int = 6  # used only when this project creates the topics (local stack)
    # DLQ topics this project creates accept records this large, and at least 64 KiB more than
    # the topic they take dead letters from (the error headers); larger ones go by claim check.
    dlq_max_message_bytes: int = 8 * 1024 * 1024
    stream: StreamSettings = StreamSettings()


class AlertSettings(dg.Config):
    """Where failed runs and failed checks are announced."""

    webhook_url_env: Optional[str] = None  # env var holding a Teams (Workflows) webhook URL
    dagster_url: str = "http://127.0.0.1:3000"  # the UI's address, for links in alerts


class CoreSettings(BaseSettings):
    """The sections every domain shares."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_", env_nested_delimiter="__", extra="ignore")

    source_kafka: KafkaConnection = KafkaConnection()
    kafka: KafkaConnection = KafkaConnection()
    storage: StorageSettings = StorageSettings()
    ingest: IngestSettings = IngestSettings()
    alerts: AlertSettings = AlertSettings()
    # First day of the daily ingestion partitions (PIPELINE_PARTITIONS_START=2026-01-15; a day after
    # today fails the load). Unset: the day the deployment first ran, kept in the Dagster instance
    # (lib/policies.partitions_start), so a new installation shows no years of "missing" days and
    # "backfill all missing" is real work.
    partitions_start: Optional[date] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = Path(os.environ.get(CONFIG_FILE_ENV, "config.yaml"))
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file))


def settings_model(sections: Mapping[str, type[dg.Config]]) -> type[CoreSettings]:
    """The shared settings plus each domain's section, under the domain's name."""
    fields: dict[str, Any] = {name: (kind, kind()) for name, kind in sections.items()}
    return create_model("PipelineSettings", __base__=CoreSettings, **fields)


Section = TypeVar("Section", bound=dg.Config)


def section(settings: CoreSettings, name: str, kind: type[Section]) -> Section:
    """A domain's own section of the settings."""
    value = getattr(settings, name, None)
    if not isinstance(value, kind):
        raise TypeError(f"settings have no {name!r} section of type {kind.__name__}")
    return value


class IngestConfigResource(dg.ConfigurableResource):
    """Ingest bounds shared by every sensor and run. No external system: it makes the
    configuration visible, typed, in the Dagster UI."""

    ingest: IngestSettings

    def consumer_group(self, asset_name: str) -> str:
        return f"{self.ingest.consumer_group_prefix}.{asset_name}"

    def retry_topics(self, base: str) -> list[tuple[str, int]]:
        """``(topic, delay_s)`` per retry level, e.g. ``downloads.pending.retry.5m``."""
        return [(retry_topic_name(base, d), d) for d in self.ingest.retry_delays_s]


def retry_topic_name(base: str, delay_s: int) -> str:
    if delay_s % 3600 == 0:
        label = f"{delay_s // 3600}h"
    elif delay_s % 60 == 0:
        label = f"{delay_s // 60}m"
    else:
        label = f"{delay_s}s"
    return f"{base}.retry.{label}"
