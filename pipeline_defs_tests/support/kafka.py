"""Producing sample events, running sensor ticks the way the daemon would, and reading back."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg
import polars as pl

from pipeline_defs.domains import DOMAINS
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import IngestConfigResource, IngestSettings
from pipeline_sim.events import encode, xact_event


def sample_events(count: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    return [xact_event(rng, "http://127.0.0.1:8765") for _ in range(count)]


def produce_events(kafka: KafkaResource, topic: str, events: Iterable[dict]) -> int:
    return kafka.produce(topic, (OutRecord(value=encode(e), key=e["trace_id"].encode()) for e in events))


def produce_raw(kafka: KafkaResource, topic: str, values: Sequence[bytes]) -> int:
    return kafka.produce(topic, (OutRecord(value=v, key=b"raw") for v in values))


def location(resources: dict) -> dg.Definitions:
    """Every registered domain's definitions, bound to ``resources``."""
    return dg.Definitions.merge(*(domain.defs for domain in DOMAINS), dg.Definitions(resources=resources))


def with_ingest(resources: dict, **changes: Any) -> dict:
    """``resources`` with some ingest settings changed."""
    ingest = resources["ingest"].ingest
    return {**resources, "ingest": IngestConfigResource(ingest=IngestSettings(**{**ingest.model_dump(), **changes}))}


# Streaming runs in tests: short micro-batches and report intervals, so a run of seconds reports.
STREAM_SETTINGS = {"report_interval_s": 1.0, "batch_max_wait_s": 0.2, "task_batch_max_wait_s": 0.2, "gate_poll_s": 1.0}


def streaming(resources: dict, max_run_s: float, **changes: Any) -> dict:
    """``resources`` with streaming runs that end cleanly after ``max_run_s``."""
    return with_ingest(resources, stream={**STREAM_SETTINGS, "max_run_s": max_run_s, **changes})


def tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, resources: dict, cursor: str | None = None) -> Any:
    """Evaluate one tick, as the daemon would, in the code location the sensor belongs to."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=location(resources))
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


def run_all(sensor, asset, resources, instance) -> list[dg.ExecuteInProcessResult]:
    """Ticks until the sensor plans nothing more; every run must succeed."""
    results: list[dg.ExecuteInProcessResult] = []
    cursor = None
    for _ in range(20):
        data = tick(sensor, instance, resources, cursor)
        cursor = data.cursor or cursor
        if not data.run_requests:
            return results
        for request in data.run_requests:
            result = execute(asset, request, resources, instance)
            assert result.success, f"{asset.key.to_user_string()} run failed"
            results.append(result)
    raise AssertionError("the sensor kept planning")
