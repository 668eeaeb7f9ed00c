import dagster as dg
import pytest

from pipeline_defs.defs.claimx.settings import ClaimXSettings
from pipeline_defs.defs.dlq.settings import DlqSettings
from pipeline_defs.defs.xact.settings import XactSettings
from pipeline_defs.domains import PipelineSettings, build_resources
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import CONFIG_FILE_ENV, section


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text(
        "kafka:\n  bootstrap_servers: yaml-broker:9092\n"
        "xact:\n  topics:\n    events: yaml.events\n"
        "ingest:\n  max_events_per_run: 123\n"
    )
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    return path


def test_defaults_when_nothing_is_configured(monkeypatch, tmp_path):
    monkeypatch.setenv(CONFIG_FILE_ENV, str(tmp_path / "absent.yaml"))
    settings = PipelineSettings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert section(settings, "xact", XactSettings).topics.events == "events.raw"
    assert settings.storage.lake_root == ".lake/tables"


def test_yaml_overrides_defaults(config_file):
    settings = PipelineSettings()
    assert settings.kafka.bootstrap_servers == "yaml-broker:9092"
    assert section(settings, "xact", XactSettings).topics.events == "yaml.events"
    assert settings.ingest.max_events_per_run == 123
    assert settings.ingest.max_runs_per_tick == 4  # untouched fields keep their default


def test_environment_overrides_yaml(config_file, monkeypatch):
    monkeypatch.setenv("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "env-broker:9093")
    monkeypatch.setenv("PIPELINE_INGEST__MAX_EVENTS_PER_RUN", "77")
    settings = PipelineSettings()
    assert settings.kafka.bootstrap_servers == "env-broker:9093"
    assert settings.ingest.max_events_per_run == 77
    assert section(settings, "xact", XactSettings).topics.events == "yaml.events"


def test_secrets_are_bound_as_env_vars_and_never_stored(monkeypatch, tmp_path):
    monkeypatch.setenv(CONFIG_FILE_ENV, str(tmp_path / "absent.yaml"))
    monkeypatch.setenv("PIPELINE_SOURCE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PIPELINE_SOURCE_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("PIPELINE_SOURCE_KAFKA__SASL_PASSWORD_ENV", "EVENTHUB_CONNECTION_STRING")
    monkeypatch.setenv("EVENTHUB_CONNECTION_STRING", "Endpoint=sb://x/;SharedAccessKey=s3cr3t")
    resources = build_resources(PipelineSettings())

    source = resources["source_kafka"]
    assert "s3cr3t" not in repr(source) and "s3cr3t" not in str(source.model_dump())

    @dg.asset
    def password_seen_at_run_time(source_kafka: KafkaResource) -> bool:
        return source_kafka.client_config()["sasl.password"].endswith("s3cr3t")

    result = dg.materialize([password_seen_at_run_time], resources={"source_kafka": source})
    assert result.output_for_node("password_seen_at_run_time") is True


def test_each_domain_has_its_own_section(monkeypatch, tmp_path):
    monkeypatch.setenv(CONFIG_FILE_ENV, str(tmp_path / "absent.yaml"))
    monkeypatch.setenv("PIPELINE_CLAIMX__API__BASE_URL", "https://claimx.example/v2")
    monkeypatch.setenv("PIPELINE_XACT__DOWNLOADS__ALLOWED_HOSTS", '["files.example.com"]')
    settings = PipelineSettings()
    assert section(settings, "claimx", ClaimXSettings).api.base_url == "https://claimx.example/v2"
    assert section(settings, "xact", XactSettings).downloads.allowed_hosts == ["files.example.com"]
    assert section(settings, "dlq", DlqSettings).oldest_error_hours == 72
