import dagster as dg

from pipeline_defs.defs.xact.assets import xact_attachments, xact_events
from pipeline_defs.lib.range_runs import SensorTopic, blocking_checks, build_offset_range_sensor, build_task_sensors

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

xact_events_sensor = build_offset_range_sensor(
    name="xact_events_kafka_sensor",
    job=xact_events_job,
    asset_name="xact_events",
    topics_of=lambda pipeline: [SensorTopic(pipeline.topics.xact_events)],
    description="Plans new events.raw offsets into xact_events runs.",
)

xact_attachments_sensor, xact_attachments_retry_sensor = build_task_sensors(
    name="xact_attachments",
    job=xact_attachments_job,
    asset_name="xact_attachments",
    pending_of=lambda pipeline: pipeline.topics.xact_downloads_pending,
    what="XACT download tasks",
    gated_by=blocking_checks(xact_events),
)
