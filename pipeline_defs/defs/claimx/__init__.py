"""ClaimX: events enriched through the ClaimX API into entity tables, and their media files.
Registers its assets, jobs and sensors, its settings section (topics, API, media hosts), the
API's and the media hosts' resources, its topics, its Kafka feeds and its three DLQ views."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from pipeline_defs.defs.claimx.api import ClaimXApiResource
from pipeline_defs.defs.claimx.assets import claimx_attachments, claimx_entities, claimx_events
from pipeline_defs.defs.claimx.feeds import CLAIMX_EVENTS_FEED, CLAIMX_FEEDS
from pipeline_defs.defs.claimx.models import ClaimXDownloadTask, ClaimXEnrichmentTask
from pipeline_defs.defs.claimx.sensors import (
    claimx_attachments_job,
    claimx_attachments_pending_sensor,
    claimx_attachments_retry_sensor,
    claimx_attachments_stream_job,
    claimx_attachments_stream_sensor,
    claimx_enrichment_pending_sensor,
    claimx_enrichment_retry_sensor,
    claimx_entities_job,
    claimx_entities_stream_job,
    claimx_entities_stream_sensor,
    claimx_events_job,
    claimx_events_kafka_sensor,
    claimx_events_stream_job,
    claimx_events_stream_sensor,
)
from pipeline_defs.defs.claimx.settings import ClaimXSettings, ClaimXTopicsResource
from pipeline_defs.lib.attachments.downloader import AttachmentHttpResource
from pipeline_defs.lib.dlq.kinds import record_dlq, task_dlq
from pipeline_defs.lib.domains import Domain, DomainTopics
from pipeline_defs.lib.kusto.poller import EventhouseSource
from pipeline_defs.lib.resources import secret
from pipeline_defs.lib.settings import CoreSettings, section


def _settings(settings: CoreSettings) -> ClaimXSettings:
    return section(settings, "claimx", ClaimXSettings)


def _resources(settings: CoreSettings) -> Mapping[str, Any]:
    own = _settings(settings)
    return {
        "claimx_topics": ClaimXTopicsResource(topics=own.topics),
        "claimx_api": ClaimXApiResource(settings=own.api, token=secret(own.api.token_env)),
        "claimx_media_http": AttachmentHttpResource(settings=own.media),
    }


def _topics(settings: CoreSettings) -> DomainTopics:
    t = _settings(settings).topics
    return DomainTopics(
        plain=[t.events],
        retried=[t.enrichment_pending, t.downloads_pending],
        dead_letters={t.events_dlq: t.events, t.enrichment_dlq: t.enrichment_pending, t.downloads_dlq: t.downloads_pending},
    )


DOMAIN = Domain(
    name="claimx",
    defs=dg.Definitions(
        assets=[claimx_events, claimx_entities, claimx_attachments],
        jobs=[
            claimx_events_job,
            claimx_entities_job,
            claimx_attachments_job,
            claimx_events_stream_job,
            claimx_entities_stream_job,
            claimx_attachments_stream_job,
        ],
        sensors=[
            claimx_events_kafka_sensor,
            claimx_enrichment_pending_sensor,
            claimx_enrichment_retry_sensor,
            claimx_attachments_pending_sensor,
            claimx_attachments_retry_sensor,
            claimx_events_stream_sensor,
            claimx_entities_stream_sensor,
            claimx_attachments_stream_sensor,
        ],
    ),
    settings=ClaimXSettings,
    resources=_resources,
    topics=_topics,
    feeds=CLAIMX_FEEDS,
    dlq_views=(
        record_dlq("claimx_events", lambda r: r.claimx_topics.topics.events_dlq, "claimx_topics", replay_cluster="source_kafka"),
        task_dlq(
            "claimx_enrichment",
            lambda r: r.claimx_topics.topics.enrichment_dlq,
            lambda r: r.claimx_topics.topics.enrichment_pending,
            ClaimXEnrichmentTask,
            "claimx_topics",
        ),
        task_dlq(
            "claimx_downloads",
            lambda r: r.claimx_topics.topics.downloads_dlq,
            lambda r: r.claimx_topics.topics.downloads_pending,
            ClaimXDownloadTask,
            "claimx_topics",
        ),
    ),
    eventhouse_sources=(
        EventhouseSource(
            CLAIMX_EVENTS_FEED, "ClaimXEvents", "event_id", "event_ingested_at", lambda r: r.claimx_topics.topics.events_dlq
        ),
    ),
)
