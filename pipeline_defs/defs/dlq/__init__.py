"""DLQ views of every dead-letter topic, their health checks, and the operations on them."""

import dagster as dg

from pipeline_defs.defs.dlq.assets import dlq_audit, dlq_view_assets
from pipeline_defs.defs.dlq.checks import dlq_checks
from pipeline_defs.defs.dlq.operations import dlq_purge_job, dlq_replay_job, dlq_resolve_job
from pipeline_defs.defs.dlq.sensors import dlq_health_job, dlq_health_schedule, dlq_view_jobs, dlq_view_sensors

defs = dg.Definitions(
    assets=[*dlq_view_assets, dlq_audit],
    asset_checks=dlq_checks,
    jobs=[*dlq_view_jobs, dlq_health_job, dlq_replay_job, dlq_resolve_job, dlq_purge_job],
    sensors=list(dlq_view_sensors),
    schedules=[dlq_health_schedule],
)
