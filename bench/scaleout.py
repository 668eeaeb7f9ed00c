"""Scale-out: 1, 2 and 4 concurrent writers of ``xact_events``, each a Dagster run (its own
process, as the daemon's run workers are) over a disjoint set of Kafka partitions, against
one writer over all of them; throughput, Delta commit conflicts and exactly-once checks.

The runs are started directly (``dagster job execute`` with the range tags a sensor would
give them), so the figure is the writers' alone, without sensor ticks and the run queue (the
deployed path, sensor included, is ``sensor_writers`` in ``bench/ingest.py``); the run code,
the instance (PostgreSQL) and its pool limit (``default_limit`` = writers) are the deployed ones."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import polars as pl

from bench.daemon import PipelineUnderTest, pipeline
from bench.ingest import produce
from pipeline_defs.lib.ingest.consume import watermark_app_id
from pipeline_defs.lib.kafka.ranges import EVENTS_TAG, RANGES_TAG, TOPIC_TAG, OffsetRange, encode_ranges
from pipeline_defs_tests.support.stack import LocalStack

TABLE = "xact_events"
POOL = "delta_xact_events"
JOB = "xact_events_job"


def scaleout(
    stack: LocalStack,
    events: int = 600_000,
    partitions: int = 8,
    writers: tuple[int, ...] = (1, 2, 4),
    few_partitions: int = 4,
    repeats: int = 1,
) -> list[dict[str, Any]]:
    """Every writer count on ``partitions`` partitions, plus 2 writers on ``few_partitions``
    (0: skipped); ``repeats`` rounds, each in a fresh pipeline (topics, table, instance)."""
    cases = [(partitions, n) for n in writers] + ([(few_partitions, 2)] if few_partitions else [])
    return [writer_case(stack, events, p, n) for _ in range(repeats) for p, n in cases]


def writer_case(stack: LocalStack, events: int, partitions: int, writers: int, events_per_commit: int = 200_000) -> dict:
    env = {"PIPELINE_INGEST__TOPIC_PARTITIONS": str(partitions)}
    with pipeline(stack, max_events_per_run=events_per_commit, writers=writers, extra_env=env) as run:
        # the instance's schema and the pool's row, once: runs that all claim a fresh pool race to
        # insert its row, and the losers fail (UniqueViolation; found by this benchmark)
        instance = run.instance()
        instance.event_log_storage.initialize_concurrency_limit_to_default(POOL)
        slots = instance.event_log_storage.get_concurrency_info(POOL).slot_count
        kafka, topic = run.resources["kafka"], run.topics.xact.events
        produce(kafka, topic, events)
        states = kafka.partition_states(topic, 10)
        ranges = [OffsetRange(topic, p, s.low, s.high) for p, s in sorted(states.items())]
        shares = [ranges[i::writers] for i in range(writers)]
        load = os.getloadavg()[0]
        print(f"[bench] scaleout: {events} events on {partitions} partitions, {writers} writers", flush=True)
        started_wall, started = time.time(), time.monotonic()
        processes = [launch(run, topic, share, i) for i, share in enumerate(shares)]
        exit_codes = [p.wait(1_200) for p in processes]
        seconds = time.monotonic() - started
        runs = [run_figures(run.instance(), r) for r in run.instance().get_runs()]
        group = f"{run.settings.ingest.consumer_group_prefix}.{TABLE}"
        checks = correctness(run, events, group, {(topic, p): s.high for p, s in states.items()})
    stepped = [r for r in runs if r["step_start"]] or [{"step_start": 0.0, "step_end": 1.0}]
    step_seconds = max(r["step_end"] for r in stepped) - min(r["step_start"] for r in stepped)
    return {
        "measured_at": datetime.fromtimestamp(started_wall, UTC).isoformat(timespec="seconds"),
        "events": events,
        "partitions": partitions,
        "writers": writers,
        "pool_slots": slots,
        "partitions_per_writer": [len(s) for s in shares],
        "load_avg_1m_before": round(load, 2),
        "seconds_launch_to_all_exited": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        "seconds_first_step_start_to_last_step_end": round(step_seconds, 2),
        "events_per_s_in_steps": round(events / step_seconds, 1),
        "run_step_seconds": sorted(round(r["step_end"] - r["step_start"], 1) for r in runs if r["step_start"]),
        "commit_conflicts": sum(r["commit_conflicts"] for r in runs),
        "exit_codes": exit_codes,
        "runs_succeeded": sum(r["status"] == "SUCCESS" for r in runs),
        **checks,
    }


def launch(run: PipelineUnderTest, topic: str, share: list[OffsetRange], index: int) -> subprocess.Popen:
    """One run of the events job over ``share``, tagged as the sensor tags its runs."""
    tags = {
        TOPIC_TAG: topic,
        RANGES_TAG: encode_ranges(share),
        EVENTS_TAG: str(sum(r.size for r in share)),
        "dagster/partition": datetime.now(UTC).date().isoformat(),
    }
    command = ["dagster", "job", "execute", "-m", "pipeline_defs.definitions", "-j", JOB, "--tags", json.dumps(tags)]
    return run._spawn(f"writer{index}", *command)


def run_figures(instance: dg.DagsterInstance, dagster_run: dg.DagsterRun) -> dict:
    """When the run's step started and ended, and the commit conflicts its materialization reports."""
    logs = instance.all_logs(dagster_run.run_id)
    # the asset's own step, not the checks' steps after it
    stamps = {e.dagster_event_type: e.timestamp for e in reversed(logs) if e.step_key == TABLE}
    conflicts = 0
    for entry in logs:
        if entry.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION and entry.asset_materialization:
            conflicts += int(entry.asset_materialization.metadata["commit_conflicts"].value)  # type: ignore[arg-type]
    step_end = stamps.get(dg.DagsterEventType.STEP_SUCCESS) or stamps.get(dg.DagsterEventType.STEP_FAILURE)
    return {
        "status": dagster_run.status.value,
        "step_start": stamps.get(dg.DagsterEventType.STEP_START, 0.0),
        "step_end": step_end or time.time(),
        "commit_conflicts": conflicts,
    }


def correctness(run: PipelineUnderTest, events: int, group: str, ends: dict[tuple[str, int], int]) -> dict:
    """Rows = events, no (topic, partition, offset) twice, every partition's watermark (its
    Delta app transaction) at the partition's end, and how many commits that took."""
    rows = run.rows(TABLE, ["kafka_topic", "kafka_partition", "kafka_offset"])
    duplicates = rows.height - rows.unique().height
    table = run.lake.load(TABLE)
    assert table is not None, f"{TABLE} was never created"
    marks = {f"{t}[{p}]": table.transaction_version(watermark_app_id(group, t, p)) for t, p in ends}
    behind = {key: mark for (key, mark), end in zip(marks.items(), ends.values()) if mark != end}
    per_partition = rows.group_by("kafka_partition").len().sort("kafka_partition")
    return {
        "rows": rows.height,
        "duplicate_offsets": duplicates,
        "watermarks_not_at_end": behind,
        "rows_per_partition": dict(zip(per_partition["kafka_partition"].to_list(), per_partition["len"].to_list())),
        "delta_commits": table.version() + 1,
        "correct": rows.height == events and duplicates == 0 and not behind,
        "distinct_trace_ids": run.rows(TABLE, ["trace_id"]).select(pl.col("trace_id").n_unique()).item(),
    }
