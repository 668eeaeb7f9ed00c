"""XACT: events whose attachments are downloaded into OneLake."""

import dagster as dg

from pipeline_defs.defs.xact.assets import xact_events
from pipeline_defs.defs.xact.sensors import xact_events_job, xact_events_sensor

defs = dg.Definitions(assets=[xact_events], jobs=[xact_events_job], sensors=[xact_events_sensor])
