"""The jobs and sensors that keep each DLQ view current, and the DLQ health schedule."""

from typing import Any

import dagster as dg

from pipeline_defs.defs.dlq.assets import dlq_view_assets
from pipeline_defs.defs.dlq.checks import dlq_checks
from pipeline_defs.defs.dlq.views import DLQ_VIEWS
from pipeline_defs.lib.dlq_views import DlqViewSpec
from pipeline_defs.lib.sensors import KafkaFeed, SensorTopic, build_offset_range_sensor


def _view_feed(spec: DlqViewSpec) -> KafkaFeed:
    return KafkaFeed(spec.table, spec.table, lambda pipeline: [SensorTopic(spec.topic_of(pipeline))])


DLQ_FEEDS = [_view_feed(spec) for spec in DLQ_VIEWS.values()]


def _view_job_and_sensor(feed: KafkaFeed, asset: dg.AssetsDefinition) -> tuple[Any, dg.SensorDefinition]:
    job = dg.define_asset_job(
        f"{feed.table}_job",
        selection=dg.AssetSelection.assets(asset),
        description=f"Fold new dead letters into {feed.table}.",
    )
    sensor = build_offset_range_sensor(
        name=f"{feed.table}_sensor",
        job=job,
        feed=feed,
        description=f"Plans new dead letters into {feed.table} runs.",
        partitioned=False,
    )
    return job, sensor


dlq_view_jobs, dlq_view_sensors = zip(*(_view_job_and_sensor(feed, asset) for feed, asset in zip(DLQ_FEEDS, dlq_view_assets)))

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
