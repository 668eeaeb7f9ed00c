"""The health domain: is every Kafka-fed asset keeping up (over the feeds the other domains
register, and Dagster's freshness checks on them), the operator's offset reset, and alerts on
failed runs and failed checks."""

from collections.abc import Sequence
from datetime import timedelta

import dagster as dg

from pipeline_defs.defs.health.alerts import asset_check_failure_alert_sensor, run_failure_alert_sensor
from pipeline_defs.defs.health.checks import consumer_checks
from pipeline_defs.defs.health.reset import build_reset_job
from pipeline_defs.lib.domains import Domain
from pipeline_defs.lib.policies import scheduled_checks

# Dagster's freshness check on every Kafka-fed table: WARN when nothing was written for an hour
# (quiet sources are normal; consumer_keeps_up turns ERROR when there is lag and no progress).
FRESH_WITHIN = timedelta(hours=1)


def health_domain(domains: Sequence[Domain]) -> Domain:
    feeds = [feed for domain in domains for feed in domain.feeds]
    checks = consumer_checks(feeds)
    job, schedule = scheduled_checks(
        "stream_health",
        checks,
        "*/5 * * * *",
        "consumer_keeps_up of every Kafka-fed table: lag, time since the last successful run, offsets past the log end.",
    )
    freshness = dg.build_last_update_freshness_checks(
        assets=[dg.AssetKey(table) for table in sorted({feed.table for feed in feeds})],
        lower_bound_delta=FRESH_WITHIN,
        severity=dg.AssetCheckSeverity.WARN,
    )
    freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=freshness, default_status=dg.DefaultSensorStatus.RUNNING
    )
    return Domain(
        name="health",
        defs=dg.Definitions(
            asset_checks=[*checks, *freshness],
            jobs=[job, build_reset_job(feeds)],
            schedules=[schedule],
            sensors=[run_failure_alert_sensor, asset_check_failure_alert_sensor, freshness_sensor],
        ),
    )
