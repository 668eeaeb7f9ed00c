"""The job and sensor that keep a DLQ view current, and the DLQ health schedule."""

from typing import Any

import dagster as dg

from pipeline_defs.lib.dlq.views import DlqViewSpec
from pipeline_defs.lib.ingest.feeds import KafkaFeed, SensorTopic
from pipeline_defs.lib.ingest.sensors import SLOW_SENSOR_INTERVAL_S, build_offset_range_sensor


def view_feed(spec: DlqViewSpec) -> KafkaFeed:
    return KafkaFeed(spec.table, spec.table, lambda resources: [SensorTopic(spec.topic_of(resources))], spec.resource_keys)


def view_job_and_sensor(feed: KafkaFeed, asset: dg.AssetsDefinition) -> tuple[Any, dg.SensorDefinition]:
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
        interval_s=SLOW_SENSOR_INTERVAL_S,
    )
    return job, sensor
