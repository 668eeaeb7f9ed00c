import dagster as dg

from pipeline_defs.defs.dlq.assets import dlq_view_assets
from pipeline_defs.defs.dlq.checks import dlq_checks
from pipeline_defs.defs.dlq.views import DLQ_VIEWS
from pipeline_defs.lib.range_runs import SensorTopic, build_offset_range_sensor


def _view_job_and_sensor(spec, asset):
    job = dg.define_asset_job(
        f"{spec.table}_job",
        selection=dg.AssetSelection.assets(asset),
        description=f"Fold new {spec.name} dead letters into {spec.table}.",
    )
    sensor = build_offset_range_sensor(
        name=f"{spec.table}_sensor",
        job=job,
        asset_name=spec.table,
        topics_of=lambda pipeline, spec=spec: [SensorTopic(spec.topic_of(pipeline))],
        description=f"Plans new {spec.name} dead letters into {spec.table} runs.",
        source_resource_key="kafka",
        partitioned=False,
    )
    return job, sensor


dlq_view_jobs, dlq_view_sensors = zip(
    *(_view_job_and_sensor(spec, asset) for spec, asset in zip(DLQ_VIEWS.values(), dlq_view_assets))
)

dlq_health_job = dg.define_asset_job(
    "dlq_health_checks",
    selection=dg.AssetSelection.checks(*dlq_checks),
    description="Growth-rate and oldest-age checks of every DLQ view.",
)

# Age grows with no new dead letters, so the checks also run on the clock.
dlq_health_schedule = dg.ScheduleDefinition(
    job=dlq_health_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Evaluates the DLQ health checks every 15 minutes.",
)
