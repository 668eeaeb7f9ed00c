"""ClaimX's jobs, the Kafka feeds of its assets, and the sensors that plan their runs."""

import dagster as dg

from pipeline_defs.defs.claimx.assets import claimx_attachments, claimx_entities, claimx_events
from pipeline_defs.defs.claimx.enrichment import ENRICHMENT_LOG
from pipeline_defs.lib.ingest.feeds import KafkaFeed, SensorTopic, task_feeds
from pipeline_defs.lib.ingest.sensors import blocking_checks, build_offset_range_sensor, build_task_sensors

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

CLAIMX_EVENTS_FEED = KafkaFeed(
    "claimx_events",
    "claimx_events",
    lambda resources: [SensorTopic(resources.claimx_topics.topics.events)],
    frozenset({"claimx_topics"}),
    cluster="source_kafka",
)
CLAIMX_ENRICHMENT_FEED, CLAIMX_ENRICHMENT_RETRIES_FEED = task_feeds(
    "claimx_entities", ENRICHMENT_LOG, lambda resources: resources.claimx_topics.topics.enrichment_pending, "claimx_topics"
)
CLAIMX_DOWNLOADS_FEED, CLAIMX_DOWNLOAD_RETRIES_FEED = task_feeds(
    "claimx_attachments",
    "claimx_attachments",
    lambda resources: resources.claimx_topics.topics.downloads_pending,
    "claimx_topics",
)
CLAIMX_FEEDS = (
    CLAIMX_EVENTS_FEED,
    CLAIMX_ENRICHMENT_FEED,
    CLAIMX_ENRICHMENT_RETRIES_FEED,
    CLAIMX_DOWNLOADS_FEED,
    CLAIMX_DOWNLOAD_RETRIES_FEED,
)

claimx_events_kafka_sensor = build_offset_range_sensor(
    name="claimx_events_kafka_sensor",
    job=claimx_events_job,
    feed=CLAIMX_EVENTS_FEED,
    description="Plans new claimx.events.raw offsets into claimx_events runs.",
)

claimx_enrichment_pending_sensor, claimx_enrichment_retry_sensor = build_task_sensors(
    name="claimx_enrichment",
    job=claimx_entities_job,
    feed=CLAIMX_ENRICHMENT_FEED,
    retry_feed=CLAIMX_ENRICHMENT_RETRIES_FEED,
    what="ClaimX enrichment tasks",
    gated_by=blocking_checks(claimx_events),
)

claimx_attachments_pending_sensor, claimx_attachments_retry_sensor = build_task_sensors(
    name="claimx_attachments",
    job=claimx_attachments_job,
    feed=CLAIMX_DOWNLOADS_FEED,
    retry_feed=CLAIMX_DOWNLOAD_RETRIES_FEED,
    what="ClaimX media download tasks",
    gated_by=blocking_checks(claimx_entities),
)
