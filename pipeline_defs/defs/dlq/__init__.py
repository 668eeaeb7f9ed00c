"""The DLQ domain: a view of every dead-letter topic the other domains register, their health
checks, and the replay/resolve/purge operations on them."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from pipeline_defs.defs.dlq.assets import dlq_audit, dlq_view_asset
from pipeline_defs.defs.dlq.checks import dlq_health_checks
from pipeline_defs.defs.dlq.operations import operation_jobs
from pipeline_defs.defs.dlq.sensors import view_feed, view_job_and_sensor
from pipeline_defs.defs.dlq.settings import DlqLimitsResource, DlqSettings
from pipeline_defs.lib.dlq.views import DlqViewSpec
from pipeline_defs.lib.domains import Domain
from pipeline_defs.lib.policies import scheduled_checks
from pipeline_defs.lib.settings import CoreSettings, section


def _resources(settings: CoreSettings) -> Mapping[str, Any]:
    return {"dlq_limits": DlqLimitsResource(limits=section(settings, "dlq", DlqSettings))}


def dlq_domain(domains: Sequence[Domain]) -> Domain:
    """The DLQ domain over the views ``domains`` register."""
    views: dict[str, DlqViewSpec] = {spec.name: spec for domain in domains for spec in domain.dlq_views}
    feeds = [view_feed(spec) for spec in views.values()]
    assets = [dlq_view_asset(spec) for spec in views.values()]
    jobs, sensors = zip(*(view_job_and_sensor(feed, asset) for feed, asset in zip(feeds, assets)))
    checks = [check for spec in views.values() for check in dlq_health_checks(spec)]
    health_job, health_schedule = scheduled_checks(
        "dlq_health", checks, "*/15 * * * *", "Growth-rate and oldest-age checks of every DLQ view."
    )
    return Domain(
        name="dlq",
        defs=dg.Definitions(
            assets=[*assets, dlq_audit],
            asset_checks=checks,
            jobs=[*jobs, health_job, *operation_jobs(views)],
            sensors=list(sensors),
            schedules=[health_schedule],
        ),
        settings=DlqSettings,
        resources=_resources,
        feeds=feeds,
    )
