"""The code location: per-domain definitions, resources from settings, global policies."""

import dagster as dg

from pipeline_defs.defs import claimx, dlq, health, xact
from pipeline_defs.lib.resources import build_resources
from pipeline_defs.lib.settings import PipelineSettings

defs = dg.Definitions.merge(
    xact.defs,
    claimx.defs,
    dlq.defs,
    health.defs,
    dg.Definitions(
        resources=build_resources(PipelineSettings()),
        # Every run is one short step; running it in the run's own process saves a
        # subprocess start per run, which dominates latency at small batch sizes.
        executor=dg.in_process_executor,
    ),
)
