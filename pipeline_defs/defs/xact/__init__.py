"""XACT: events whose attachments are downloaded into OneLake."""

import dagster as dg

from pipeline_defs.defs.xact.assets import xact_attachments, xact_events
from pipeline_defs.defs.xact.sensors import (
    xact_attachments_job,
    xact_attachments_retry_sensor,
    xact_attachments_sensor,
    xact_events_job,
    xact_events_sensor,
)

defs = dg.Definitions(
    assets=[xact_events, xact_attachments],
    jobs=[xact_events_job, xact_attachments_job],
    sensors=[xact_events_sensor, xact_attachments_sensor, xact_attachments_retry_sensor],
)
