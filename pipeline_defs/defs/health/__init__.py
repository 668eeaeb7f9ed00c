"""Stream health: is every Kafka-fed asset keeping up, the operator's offset reset, and alerts
on failed runs."""

import dagster as dg

from pipeline_defs.defs.claimx.sensors import CLAIMX_FEEDS
from pipeline_defs.defs.dlq.sensors import DLQ_FEEDS
from pipeline_defs.defs.health.alerts import run_failure_alert_sensor
from pipeline_defs.defs.health.checks import consumer_checks
from pipeline_defs.defs.health.reset import build_reset_job
from pipeline_defs.defs.xact.sensors import XACT_FEEDS

FEEDS = [*XACT_FEEDS, *CLAIMX_FEEDS, *DLQ_FEEDS]
stream_checks = consumer_checks(FEEDS)

stream_health_job = dg.define_asset_job(
    "stream_health_checks",
    selection=dg.AssetSelection.checks(*stream_checks),
    description="consumer_keeps_up of every Kafka-fed table: lag, time since the last successful run, offsets past the log end.",
)

stream_health_schedule = dg.ScheduleDefinition(
    job=stream_health_job,
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Evaluates consumer_keeps_up of every Kafka-fed table every 5 minutes.",
)

defs = dg.Definitions(
    asset_checks=stream_checks,
    jobs=[stream_health_job, build_reset_job(FEEDS)],
    schedules=[stream_health_schedule],
    sensors=[run_failure_alert_sensor],
)
