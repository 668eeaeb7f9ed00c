"""ClaimX: events enriched through the ClaimX API into entity tables, and their media files."""

import dagster as dg

from pipeline_defs.defs.claimx.assets import claimx_attachments, claimx_entities, claimx_events
from pipeline_defs.defs.claimx.sensors import (
    claimx_attachments_job,
    claimx_attachments_retry_sensor,
    claimx_attachments_sensor,
    claimx_enrichment_retry_sensor,
    claimx_enrichment_sensor,
    claimx_entities_job,
    claimx_events_job,
    claimx_events_sensor,
)

defs = dg.Definitions(
    assets=[claimx_events, claimx_entities, claimx_attachments],
    jobs=[claimx_events_job, claimx_entities_job, claimx_attachments_job],
    sensors=[
        claimx_events_sensor,
        claimx_enrichment_sensor,
        claimx_enrichment_retry_sensor,
        claimx_attachments_sensor,
        claimx_attachments_retry_sensor,
    ],
)
