"""The health domain: is every Kafka-fed asset keeping up (over the feeds the other domains
register), the operator's offset reset, and alerts on failed runs."""

from collections.abc import Sequence

import dagster as dg

from pipeline_defs.defs.health.alerts import run_failure_alert_sensor
from pipeline_defs.defs.health.checks import consumer_checks
from pipeline_defs.defs.health.reset import build_reset_job
from pipeline_defs.lib.domains import Domain
from pipeline_defs.lib.policies import scheduled_checks


def health_domain(domains: Sequence[Domain]) -> Domain:
    feeds = [feed for domain in domains for feed in domain.feeds]
    checks = consumer_checks(feeds)
    job, schedule = scheduled_checks(
        "stream_health",
        checks,
        "*/5 * * * *",
        "consumer_keeps_up of every Kafka-fed table: lag, time since the last successful run, offsets past the log end.",
    )
    return Domain(
        name="health",
        defs=dg.Definitions(
            asset_checks=checks,
            jobs=[job, build_reset_job(feeds)],
            schedules=[schedule],
            sensors=[run_failure_alert_sensor],
        ),
    )
