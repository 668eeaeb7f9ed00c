"""ClaimX's jobs and the sensors that run them: batch runs planned from offset ranges, and one
streaming run per asset kept alive while streaming is on (the batch sensors give way to it)."""

import dagster as dg

from pipeline_defs.defs.claimx.assets import claimx_attachments, claimx_entities, claimx_events
from pipeline_defs.defs.claimx.feeds import (
    CLAIMX_DOWNLOAD_RETRIES_FEED,
    CLAIMX_DOWNLOADS_FEED,
    CLAIMX_ENRICHMENT_FEED,
    CLAIMX_ENRICHMENT_RETRIES_FEED,
    CLAIMX_EVENTS_FEED,
)
from pipeline_defs.defs.claimx.runs import CLAIMX_ENRICHMENT, CLAIMX_EVENT_LOG, CLAIMX_INVENTORY
from pipeline_defs.lib.ingest.sensors import blocking_checks, build_offset_range_sensor, build_task_sensors
from pipeline_defs.lib.ingest.stream_jobs import build_stream

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

claimx_events_kafka_sensor = build_offset_range_sensor(
    name="claimx_events_kafka_sensor",
    job=claimx_events_job,
    feed=CLAIMX_EVENTS_FEED,
    description="Plans new claimx.events.raw offsets into claimx_events runs.",
    streamed=True,
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

claimx_events_stream_job, claimx_events_stream_sensor = build_stream(CLAIMX_EVENT_LOG, blocking=blocking_checks(claimx_events))
claimx_entities_stream_job, claimx_entities_stream_sensor = build_stream(
    CLAIMX_ENRICHMENT, blocking=blocking_checks(claimx_entities), gated_by=blocking_checks(claimx_events)
)
claimx_attachments_stream_job, claimx_attachments_stream_sensor = build_stream(
    CLAIMX_INVENTORY, blocking=blocking_checks(claimx_attachments), gated_by=blocking_checks(claimx_entities)
)
