"""The resources every domain shares, built from the shared settings. Secrets are bound with
``dg.EnvVar`` so Dagster resolves them at run time and never shows their values."""

from __future__ import annotations

from typing import Any, Optional

import dagster as dg

from pipeline_defs.lib.attachments.file_store import FileStoreResource
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.health.alerts import AlertWebhookResource
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import CoreSettings, IngestConfigResource, KafkaConnection


def secret(env_name: Optional[str]) -> Optional[Any]:
    """The value of ``env_name`` as Dagster resolves it at run time (never shown in the UI)."""
    return dg.EnvVar(env_name) if env_name else None


def kafka_resource(connection: KafkaConnection) -> KafkaResource:
    return KafkaResource(connection=connection, sasl_password=secret(connection.sasl_password_env))


def shared_resources(settings: CoreSettings) -> dict[str, Any]:
    account_key = secret(settings.storage.azure_account_key_env)
    return {
        "source_kafka": kafka_resource(settings.source_kafka),
        "kafka": kafka_resource(settings.kafka),
        "lake": DeltaLakeResource(storage=settings.storage, azure_account_key=account_key),
        "files": FileStoreResource(storage=settings.storage, azure_account_key=account_key),
        "ingest": IngestConfigResource(ingest=settings.ingest),
        "alert_webhook": AlertWebhookResource(
            url=secret(settings.alerts.webhook_url_env), dagster_url=settings.alerts.dagster_url
        ),
    }
