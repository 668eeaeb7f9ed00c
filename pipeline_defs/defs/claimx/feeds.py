"""The Kafka feeds of ClaimX's assets: the source events, enrichment tasks and media download
tasks, each task topic with its retries."""

from pipeline_defs.defs.claimx.enrichment import ENRICHMENT_LOG
from pipeline_defs.lib.ingest.feeds import KafkaFeed, SensorTopic, task_feeds

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
