"""Producing sample events and running sensor ticks the way the daemon would."""

from __future__ import annotations

import json
import random
from typing import Iterable, Sequence

import dagster as dg
import polars as pl

from pipeline_defs.lib.delta import DeltaLakeResource
from pipeline_defs.lib.kafka import KafkaResource, OutRecord
from pipeline_defs.sim.events import encode, xact_event


def sample_events(count: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    return [xact_event(rng, "http://127.0.0.1:8765") for _ in range(count)]


def produce_events(kafka: KafkaResource, topic: str, events: Iterable[dict]) -> int:
    return kafka.produce(
        topic, (OutRecord(value=encode(e), key=e["trace_id"].encode()) for e in events)
    )


def produce_raw(kafka: KafkaResource, topic: str, values: Sequence[bytes]) -> int:
    return kafka.produce(topic, (OutRecord(value=v, key=b"raw") for v in values))


def tick(
    sensor: dg.SensorDefinition,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    resources: dict,
    cursor: str | None = None,
):
    """Evaluate one tick; ``defs`` resolves the partitioned job the sensor targets."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources=resources,
        definitions=dg.Definitions.merge(defs, dg.Definitions(resources=resources)),
    )
    return sensor.evaluate_tick(context)


def execute(
    asset: dg.AssetsDefinition,
    request: dg.RunRequest,
    resources: dict,
    instance: dg.DagsterInstance,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [asset],
        partition_key=request.partition_key,
        tags=request.tags,
        resources=resources,
        instance=instance,
    )


def table_rows(lake: DeltaLakeResource, table: str) -> pl.DataFrame:
    scan = lake.scan(table)
    return pl.DataFrame() if scan is None else scan.collect()


def headers_of(message) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in (message.headers() or [])}


def as_json(message) -> dict:
    return json.loads(message.value())


def metadata_of(result: dg.ExecuteInProcessResult) -> dict:
    """Plain values of the (single) materialization's metadata."""
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}
