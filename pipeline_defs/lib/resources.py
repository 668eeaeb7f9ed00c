"""Resources for every external system, built from the settings. Secrets are bound with
``dg.EnvVar`` so Dagster resolves them at run time and never shows their values."""

from __future__ import annotations

from typing import Any, Optional

import dagster as dg

from pipeline_defs.lib.alerts import AlertWebhookResource
from pipeline_defs.lib.claimx.api import ClaimXApiResource
from pipeline_defs.lib.delta import DeltaLakeResource
from pipeline_defs.lib.downloader import AttachmentHttpResource
from pipeline_defs.lib.file_store import FileStoreResource
from pipeline_defs.lib.kafka import KafkaResource
from pipeline_defs.lib.settings import KafkaConnection, PipelineConfigResource, PipelineSettings


def _secret(env_name: Optional[str]) -> Optional[Any]:
    return dg.EnvVar(env_name) if env_name else None


def kafka_resource(connection: KafkaConnection) -> KafkaResource:
    return KafkaResource(connection=connection, sasl_password=_secret(connection.sasl_password_env))


def build_resources(settings: PipelineSettings) -> dict[str, Any]:
    account_key = _secret(settings.storage.azure_account_key_env)
    return {
        "source_kafka": kafka_resource(settings.source_kafka),
        "kafka": kafka_resource(settings.kafka),
        "lake": DeltaLakeResource(storage=settings.storage, azure_account_key=account_key),
        "files": FileStoreResource(storage=settings.storage, azure_account_key=account_key),
        "attachment_http": AttachmentHttpResource(settings=settings.downloads),
        "claimx_api": ClaimXApiResource(settings=settings.claimx_api, token=_secret(settings.claimx_api.token_env)),
        "claimx_media_http": AttachmentHttpResource(settings=settings.claimx_media),
        "pipeline": PipelineConfigResource(topics=settings.topics, ingest=settings.ingest, dlq=settings.dlq),
        "alert_webhook": AlertWebhookResource(url=_secret(settings.alerts.webhook_url_env), dagster_url=settings.alerts.dagster_url),
    }
