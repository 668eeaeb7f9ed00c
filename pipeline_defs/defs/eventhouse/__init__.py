"""The Eventhouse domain: the Kusto tables the other domains register (``eventhouse_sources``),
each polled into its source topic by an asset, a job and a poll sensor, and a job comparing
what two sources delivered for a window (the migration's parallel run); the ``kusto`` resource
and the poller's settings section."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from pipeline_defs.defs.eventhouse.assets import build_poll_asset, poll_asset_name
from pipeline_defs.defs.eventhouse.comparison import build_comparison_job
from pipeline_defs.defs.eventhouse.sensors import build_poll_sensor
from pipeline_defs.defs.eventhouse.settings import EventhouseConfigResource, EventhouseSettings
from pipeline_defs.lib.domains import Domain
from pipeline_defs.lib.kusto.resource import KustoResource
from pipeline_defs.lib.settings import CoreSettings, section


def _resources(settings: CoreSettings) -> Mapping[str, Any]:
    own = section(settings, "eventhouse", EventhouseSettings)
    return {"eventhouse": EventhouseConfigResource(settings=own), "kusto": KustoResource(connection=own.kusto)}


def eventhouse_domain(domains: Sequence[Domain]) -> Domain:
    sources = [source for domain in domains for source in domain.eventhouse_sources]
    assets = [build_poll_asset(source) for source in sources]
    jobs = [dg.define_asset_job(f"{poll_asset_name(source)}_job", selection=[asset]) for source, asset in zip(sources, assets)]
    sensors = [build_poll_sensor(f"{poll_asset_name(source)}_poll_sensor", job) for source, job in zip(sources, jobs)]
    return Domain(
        name="eventhouse",
        defs=dg.Definitions(assets=assets, jobs=[*jobs, *map(build_comparison_job, sources)], sensors=sensors),
        settings=EventhouseSettings,
        resources=_resources,
    )
