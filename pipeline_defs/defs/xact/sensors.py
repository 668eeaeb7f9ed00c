"""XACT's jobs and the sensors that run them: batch runs planned from offset ranges, and one
streaming run per asset kept alive while streaming is on (the batch sensors give way to it)."""

import dagster as dg

from pipeline_defs.defs.xact.assets import XACT_EVENT_LOG, XACT_INVENTORY, xact_attachments, xact_events
from pipeline_defs.defs.xact.feeds import XACT_DOWNLOAD_RETRIES_FEED, XACT_DOWNLOADS_FEED, XACT_EVENTS_FEED
from pipeline_defs.lib.ingest.sensors import blocking_checks, build_offset_range_sensor, build_task_sensors
from pipeline_defs.lib.ingest.stream_jobs import build_stream

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

xact_events_kafka_sensor = build_offset_range_sensor(
    name="xact_events_kafka_sensor",
    job=xact_events_job,
    feed=XACT_EVENTS_FEED,
    description="Plans new events.raw offsets into xact_events runs.",
    streamed=True,
)

xact_attachments_pending_sensor, xact_attachments_retry_sensor = build_task_sensors(
    name="xact_attachments",
    job=xact_attachments_job,
    feed=XACT_DOWNLOADS_FEED,
    retry_feed=XACT_DOWNLOAD_RETRIES_FEED,
    what="XACT download tasks",
    gated_by=blocking_checks(xact_events),
)

xact_events_stream_job, xact_events_stream_sensor = build_stream(XACT_EVENT_LOG, blocking=blocking_checks(xact_events))
xact_attachments_stream_job, xact_attachments_stream_sensor = build_stream(
    XACT_INVENTORY, blocking=blocking_checks(xact_attachments), gated_by=blocking_checks(xact_events)
)
