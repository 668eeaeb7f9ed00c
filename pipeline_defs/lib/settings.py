"""One settings model for the whole code location.

Precedence: environment (``PIPELINE_<SECTION>__<FIELD>``) > ``config.yaml`` > defaults.
The YAML file is ``$PIPELINE_CONFIG_FILE`` when set, else ``./config.yaml`` when present.
Secrets never live here: a section names the environment variable that holds one
(``*_env`` fields) and the resource binds it with ``dg.EnvVar`` so Dagster resolves it
at run time and shows only the variable's name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import dagster as dg
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
    request_timeout_s: float = 10.0
    # The largest record the cluster's topics accept; None: ask each topic (DescribeConfigs).
    max_message_bytes: Optional[int] = None


class TopicNames(dg.Config):
    """Topic names; the defaults follow the seeds' topic design."""

    xact_events: str = "events.raw"
    xact_events_dlq: str = "events.raw.dlq"
    xact_downloads_pending: str = "downloads.pending"
    xact_downloads_dlq: str = "downloads.dlq"
    claimx_events: str = "claimx.events.raw"
    claimx_events_dlq: str = "claimx.events.raw.dlq"
    claimx_enrichment_pending: str = "claimx.enrichment.pending"
    claimx_enrichment_dlq: str = "claimx.enrichment.dlq"
    claimx_downloads_pending: str = "claimx.downloads.pending"
    claimx_downloads_dlq: str = "claimx.downloads.dlq"
    partitions: int = 6  # used only when this project creates the topics (local stack)
    # DLQ topics this project creates accept records this large, and at least 64 KiB more than
    # the topic they take dead letters from (the error headers); larger ones go by claim check.
    dlq_max_message_bytes: int = 8 * 1024 * 1024


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
    """How attachments are fetched, and which URLs may be fetched at all."""

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


class ClaimXApiSettings(dg.Config):
    """The ClaimX REST API: where it is, how hard we may press it, when we stop trying."""

    base_url: str = "https://api.claimx.example/v1"
    token_env: Optional[str] = None  # env var holding the bearer token, e.g. CLAIMX_API_TOKEN
    max_concurrent: int = 20
    timeout_s: float = 15.0
    max_attempts: int = 3  # per call, for 5xx/429/timeouts; then the task goes to a retry topic
    backoff_s: float = 0.5  # first wait between attempts; doubles, with jitter
    max_backoff_s: float = 10.0
    circuit_failure_threshold: int = 5
    circuit_reset_s: float = 30.0


class IngestSettings(dg.Config):
    """Bounds for the Kafka offset-range sensors and the runs they launch."""

    consumer_group_prefix: str = "pipeline"
    max_events_per_run: int = 50_000
    tasks_per_commit: int = 5_000  # download and enrichment runs commit (and show progress) this often
    max_runs_per_tick: int = 4
    # Backpressure: a sensor plans nothing while its job has this many runs queued or running,
    # so under load runs grow (up to max_events_per_run) instead of queueing.
    max_runs_in_flight: int = 2
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


class DlqSettings(dg.Config):
    """When a DLQ view's health checks warn or fail."""

    growth_window_min: int = 60
    growth_warn_per_min: float = 1.0
    growth_error_per_min: float = 10.0
    oldest_warn_hours: float = 24.0
    oldest_error_hours: float = 72.0


class AlertSettings(dg.Config):
    """Where failed runs and failed checks are announced."""

    webhook_url_env: Optional[str] = None  # env var holding a Teams (Workflows) webhook URL
    dagster_url: str = "http://127.0.0.1:3000"  # the UI's address, for links in alerts


class PipelineSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_", env_nested_delimiter="__", extra="ignore"
    )

    source_kafka: KafkaConnection = KafkaConnection()
    kafka: KafkaConnection = KafkaConnection()
    topics: TopicNames = TopicNames()
    storage: StorageSettings = StorageSettings()
    ingest: IngestSettings = IngestSettings()
    downloads: DownloadSettings = DownloadSettings()
    claimx_api: ClaimXApiSettings = ClaimXApiSettings()
    # ClaimX media come from presigned links on the media hosts; their own allowlist.
    claimx_media: DownloadSettings = DownloadSettings(allowed_extensions=["jpg", "jpeg", "png", "heic", "mp4", "mov", "pdf"])
    dlq: DlqSettings = DlqSettings()
    alerts: AlertSettings = AlertSettings()

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


class PipelineConfigResource(dg.ConfigurableResource):
    """Topic names and ingest bounds shared by sensors and assets. No external system:
    it makes the pipeline's configuration visible, typed, in the Dagster UI."""

    topics: TopicNames
    ingest: IngestSettings
    dlq: DlqSettings = DlqSettings()

    def consumer_group(self, asset_name: str) -> str:
        return f"{self.ingest.consumer_group_prefix}.{asset_name}"

    def retry_topics(self, base: str) -> list[tuple[str, int]]:
        """``(topic, delay_s)`` per retry level, e.g. ``downloads.pending.retry.5m``."""
        return [(retry_topic_name(base, d), d) for d in self.ingest.retry_delays_s]

    def all_topics(self) -> list[str]:
        named = [v for v in self.topics.model_dump().values() if isinstance(v, str)]
        return named + [t for base in self.retried_topics() for t, _ in self.retry_topics(base)]

    def dead_letter_sources(self) -> dict[str, str]:
        """Each DLQ topic and the topic whose records it takes."""
        t = self.topics
        return {
            t.xact_events_dlq: t.xact_events,
            t.xact_downloads_dlq: t.xact_downloads_pending,
            t.claimx_events_dlq: t.claimx_events,
            t.claimx_enrichment_dlq: t.claimx_enrichment_pending,
            t.claimx_downloads_dlq: t.claimx_downloads_pending,
        }

    def retried_topics(self) -> list[str]:
        """Task topics whose failures wait in retry topics."""
        t = self.topics
        return [t.xact_downloads_pending, t.claimx_enrichment_pending, t.claimx_downloads_pending]


def retry_topic_name(base: str, delay_s: int) -> str:
    if delay_s % 3600 == 0:
        label = f"{delay_s // 3600}h"
    elif delay_s % 60 == 0:
        label = f"{delay_s // 60}m"
    else:
        label = f"{delay_s}s"
    return f"{base}.retry.{label}"
