import dagster as dg

from pipeline_defs.defs.xact.assets import xact_events
from pipeline_defs.lib.range_runs import build_offset_range_sensor

xact_events_job = dg.define_asset_job(
    "xact_events_job",
    selection=dg.AssetSelection.assets(xact_events),
    description="Ingest one batch of XACT event offset ranges into xact_events.",
)

xact_events_sensor = build_offset_range_sensor(
    name="xact_events_kafka_sensor",
    job=xact_events_job,
    asset_name="xact_events",
    topic_of=lambda pipeline: pipeline.topics.xact_events,
    description="Plans new events.raw offsets into xact_events runs (one per batch of ranges).",
)
