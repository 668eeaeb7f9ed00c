"""ClaimX's jobs, the Kafka feeds of its assets, and the sensors that plan their runs."""

from typing import Callable

import dagster as dg

from pipeline_defs.defs.claimx.assets import claimx_attachments, claimx_entities, claimx_events
from pipeline_defs.lib.claimx.enrichment import ENRICHMENT_LOG
from pipeline_defs.lib.settings import PipelineConfigResource
from pipeline_defs.lib.sensors import KafkaFeed, SensorTopic, blocking_checks, build_offset_range_sensor, build_task_sensors

claimx_events_job = dg.define_asset_job(
    "claimx_events_job",
    selection=dg.AssetSelection.assets(claimx_events),
    description="Ingest one batch of ClaimX event offset ranges into claimx_events.",
)

claimx_entities_job = dg.define_asset_job(
    "claimx_entities_job",
    selection=dg.AssetSelection.assets(claimx_entities),
    description="Enrich one batch of ClaimX events through the API into the seven entity tables.",
)

claimx_attachments_job = dg.define_asset_job(
    "claimx_attachments_job",
    selection=dg.AssetSelection.assets(claimx_attachments),
    description="Download, upload and inventory one batch of ClaimX media files.",
)


def _task_feeds(asset_name: str, table: str, pending_of: Callable[[PipelineConfigResource], str]) -> tuple[KafkaFeed, KafkaFeed]:
    return (
        KafkaFeed(asset_name, table, lambda pipeline: [SensorTopic(pending_of(pipeline))]),
        KafkaFeed(asset_name, table, lambda pipeline: [SensorTopic(t, d) for t, d in pipeline.retry_topics(pending_of(pipeline))]),
    )


CLAIMX_EVENTS_FEED = KafkaFeed(
    "claimx_events", "claimx_events", lambda pipeline: [SensorTopic(pipeline.topics.claimx_events)], cluster="source_kafka"
)
CLAIMX_ENRICHMENT_FEED, CLAIMX_ENRICHMENT_RETRIES_FEED = _task_feeds(
    "claimx_entities", ENRICHMENT_LOG, lambda pipeline: pipeline.topics.claimx_enrichment_pending
)
CLAIMX_DOWNLOADS_FEED, CLAIMX_DOWNLOAD_RETRIES_FEED = _task_feeds(
    "claimx_attachments", "claimx_attachments", lambda pipeline: pipeline.topics.claimx_downloads_pending
)
CLAIMX_FEEDS = [
    CLAIMX_EVENTS_FEED,
    CLAIMX_ENRICHMENT_FEED,
    CLAIMX_ENRICHMENT_RETRIES_FEED,
    CLAIMX_DOWNLOADS_FEED,
    CLAIMX_DOWNLOAD_RETRIES_FEED,
]

claimx_events_sensor = build_offset_range_sensor(
    name="claimx_events_kafka_sensor",
    job=claimx_events_job,
    feed=CLAIMX_EVENTS_FEED,
    description="Plans new claimx.events.raw offsets into claimx_events runs.",
)

claimx_enrichment_sensor, claimx_enrichment_retry_sensor = build_task_sensors(
    name="claimx_enrichment",
    job=claimx_entities_job,
    feed=CLAIMX_ENRICHMENT_FEED,
    retry_feed=CLAIMX_ENRICHMENT_RETRIES_FEED,
    what="ClaimX enrichment tasks",
    gated_by=blocking_checks(claimx_events),
)

claimx_attachments_sensor, claimx_attachments_retry_sensor = build_task_sensors(
    name="claimx_attachments",
    job=claimx_attachments_job,
    feed=CLAIMX_DOWNLOADS_FEED,
    retry_feed=CLAIMX_DOWNLOAD_RETRIES_FEED,
    what="ClaimX media download tasks",
    gated_by=blocking_checks(claimx_entities),
)
