import dagster as dg

from pipeline_defs.defs.claimx.assets import claimx_attachments, claimx_entities, claimx_events
from pipeline_defs.lib.range_runs import SensorTopic, blocking_checks, build_offset_range_sensor, build_task_sensors

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

claimx_events_sensor = build_offset_range_sensor(
    name="claimx_events_kafka_sensor",
    job=claimx_events_job,
    asset_name="claimx_events",
    topics_of=lambda pipeline: [SensorTopic(pipeline.topics.claimx_events)],
    description="Plans new claimx.events.raw offsets into claimx_events runs.",
)

claimx_enrichment_sensor, claimx_enrichment_retry_sensor = build_task_sensors(
    name="claimx_enrichment",
    job=claimx_entities_job,
    asset_name="claimx_entities",
    pending_of=lambda pipeline: pipeline.topics.claimx_enrichment_pending,
    what="ClaimX enrichment tasks",
    gated_by=blocking_checks(claimx_events),
)

claimx_attachments_sensor, claimx_attachments_retry_sensor = build_task_sensors(
    name="claimx_attachments",
    job=claimx_attachments_job,
    asset_name="claimx_attachments",
    pending_of=lambda pipeline: pipeline.topics.claimx_downloads_pending,
    what="ClaimX media download tasks",
    gated_by=blocking_checks(claimx_entities),
)
