"""The Kafka feeds of XACT's assets: the source events, and the download tasks and their retries."""

from pipeline_defs.lib.ingest.feeds import KafkaFeed, SensorTopic, task_feeds

XACT_EVENTS_FEED = KafkaFeed(
    "xact_events",
    "xact_events",
    lambda resources: [SensorTopic(resources.xact_topics.topics.events)],
    frozenset({"xact_topics"}),
    cluster="source_kafka",
)
XACT_DOWNLOADS_FEED, XACT_DOWNLOAD_RETRIES_FEED = task_feeds(
    "xact_attachments", "xact_attachments", lambda resources: resources.xact_topics.topics.downloads_pending, "xact_topics"
)
XACT_FEEDS = (XACT_EVENTS_FEED, XACT_DOWNLOADS_FEED, XACT_DOWNLOAD_RETRIES_FEED)
