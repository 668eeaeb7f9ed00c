"""The code location: each registered domain's definitions, resources from the settings, global
policies. Built when Dagster loads the location, not at import: settings are read then."""

import dagster as dg

from pipeline_defs.domains import DOMAINS, PipelineSettings, build_resources
from pipeline_defs.lib.policies import ingestion_days_from, partitions_start, with_ingestion_days


@dg.definitions
def defs() -> dg.Definitions:
    settings = PipelineSettings()
    merged = dg.Definitions.merge(
        *(domain.defs for domain in DOMAINS),
        *(domain.build(settings) for domain in DOMAINS if domain.build),
        dg.Definitions(
            resources=build_resources(settings),
            # Every run is one short step; running it in the run's own process saves a
            # subprocess start per run, which dominates latency at small batch sizes.
            executor=dg.in_process_executor,
        ),
    )
    # Daily partitions from the deployment's first day, not from a fixed date years back.
    return with_ingestion_days(merged, ingestion_days_from(partitions_start(settings)))
