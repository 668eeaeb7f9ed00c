"""XACT's jobs, the Kafka feeds of its assets, and the sensors that plan their runs."""

import dagster as dg

from pipeline_defs.defs.xact.assets import xact_attachments, xact_events
from pipeline_defs.lib.ingest.feeds import KafkaFeed, SensorTopic, task_feeds
from pipeline_defs.lib.ingest.sensors import blocking_checks, build_offset_range_sensor, build_task_sensors

xact_events_job = dg.define_asset_job(
    "xact_events_job",
    selection=dg.AssetSelection.assets(xact_events),
    description="Ingest one batch of XACT event offset ranges into xact_events.",
)

xact_attachments_job = dg.define_asset_job(
    "xact_attachments_job",
    selection=dg.AssetSelection.assets(xact_attachments),
    description="Download, upload and inventory one batch of XACT attachment tasks.",
)

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

xact_events_kafka_sensor = build_offset_range_sensor(
    name="xact_events_kafka_sensor",
    job=xact_events_job,
    feed=XACT_EVENTS_FEED,
    description="Plans new events.raw offsets into xact_events runs.",
)

xact_attachments_pending_sensor, xact_attachments_retry_sensor = build_task_sensors(
    name="xact_attachments",
    job=xact_attachments_job,
    feed=XACT_DOWNLOADS_FEED,
    retry_feed=XACT_DOWNLOAD_RETRIES_FEED,
    what="XACT download tasks",
    gated_by=blocking_checks(xact_events),
)
