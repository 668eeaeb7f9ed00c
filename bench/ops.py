"""The ops service's scrape on the bench stack: 40 topics x 6 partitions (the pipeline's 25 and
15 more), every partition holding records, the feeds' consumer groups and three more committed,
5,000 entries in each of the 7 DLQ views, and a PostgreSQL-backed Dagster instance (deploy/dagster/dagster.yaml) holding materializations
of every asset and failed runs. Figures: the first scrape (clients, groups and the event log's
history read for the first time), then scrapes with every cache expired (each part read again:
the worst case Prometheus can cause) and with the service's default TTLs. Issue: one scrape < 1 s."""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pyarrow as pa
from deltalake import write_deltalake
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench.daemon import pipeline
from pipeline_defs.lib.dlq.views import RESOLVED, VIEW_SCHEMA, WAITING
from pipeline_defs.ops import names
from pipeline_defs.ops.__main__ import probes
from pipeline_defs.ops.collector import OpsCollector, Ttls
from pipeline_defs.ops.health import HealthChecker
from pipeline_defs.ops.targets import Targets, build_targets
from pipeline_defs_tests.support.stack import LocalStack

TOPICS, PARTITIONS = 40, 6
DLQ_ENTRIES = 5_000  # per DLQ view


def _targets(env: dict[str, str], settings: Any) -> Targets:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return build_targets(settings)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _dlq_entries(targets: Targets, table: str, count: int) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "entry_id": f"e{i}",
            "first_seen": now - timedelta(minutes=i),
            "last_seen": now,
            "status": WAITING if i % 4 else RESOLVED,
            "error_category": "transient",
            "payload": b"x" * 200,
            "kafka_topic": "t",
            "kafka_partition": i % PARTITIONS,
            "kafka_offset": i,
            "ingested_at": now,
            "ingestion_date": now.date(),
            "dagster_run_id": "bench",
        }
        for i in range(count)
    ]
    write_deltalake(targets.lake.table_uri(table), pa.Table.from_pylist(rows, schema=VIEW_SCHEMA), mode="append")


def _scrape(registry: CollectorRegistry) -> float:
    started = time.perf_counter()
    generate_latest(registry)
    return time.perf_counter() - started


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_s": round(statistics.median(ordered), 4),
        "p95_s": round(ordered[max(int(len(ordered) * 0.95) - 1, 0)], 4),
        "max_s": round(ordered[-1], 4),
    }


def scrape_cost(stack: LocalStack, scrapes: int = 30, materializations_per_asset: int = 20) -> dict[str, Any]:
    with pipeline(stack) as run:
        targets = _targets(run.env, run.settings)
        (cluster,) = targets.clusters
        kafka = cluster.kafka
        extra = [f"{run.name}.extra.{i}" for i in range(TOPICS - len(cluster.topics))]
        kafka.create_topics(extra, PARTITIONS)
        cluster.topics += extra
        targets.claimx_api_url = None  # no API double on the bench stack
        producer = kafka.producer()
        for topic in cluster.topics:
            for partition in range(PARTITIONS):
                for i in range(20):
                    producer.produce(topic, value=str(i).encode(), partition=partition)
        assert producer.flush(60) == 0
        groups: dict[str, list[str]] = {}
        for group, topic in cluster.pairs:
            groups.setdefault(group, []).append(topic)
        groups |= {f"{run.name}.extra{i}": extra for i in range(3)}
        for group, topics in groups.items():
            kafka.commit_offsets(group, {(t, p): 10 for t in topics for p in range(PARTITIONS)})
        for spec in targets.dlq_views:
            _dlq_entries(targets, spec.table, DLQ_ENTRIES)
        os.environ["DAGSTER_PG_URL"] = run.env["DAGSTER_PG_URL"]
        instance = run.instance()
        for asset in targets.assets:
            for _ in range(materializations_per_asset):
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(asset, metadata={"rows_written": 100, "latency_p95_s": 1.0})
                )
        for job in targets.jobs[:10]:
            for _ in range(5):
                instance.add_run(dg.DagsterRun(job_name=job, status=dg.DagsterRunStatus.FAILURE))
        figures: dict[str, Any] = {
            "topics": len(cluster.topics),
            "partitions": len(cluster.topics) * PARTITIONS,
            "consumer_groups": len(groups),
            "assets": len(targets.assets),
            "jobs": len(targets.jobs),
            "materializations": len(targets.assets) * materializations_per_asset,
            "dlq_views": len(targets.dlq_views),
            "dlq_entries_each": DLQ_ENTRIES,
        }
        for label, ttls in (("every_cache_expired", Ttls(kafka_s=0, slow_s=0, health_s=0)), ("default_ttls", Ttls())):
            checker = HealthChecker(probes(targets, instance, 3.0))
            collector = OpsCollector(targets, instance, checker, ttls)
            registry = CollectorRegistry(auto_describe=False)
            registry.register(collector)
            try:
                first = _scrape(registry)
                seconds = []
                for _ in range(scrapes):
                    seconds.append(_scrape(registry))
                    time.sleep(0.2)
                text = generate_latest(registry).decode()
                samples = text.count("pipeline_kafka_consumer_lag{")
                parts = {
                    s.labels["source"]: round(s.value, 4)
                    for family in text_string_to_metric_families(text)
                    if family.name == names.PART_SECONDS
                    for s in family.samples
                }
            finally:
                collector.close()
            figures[label] = {"first_scrape_s": round(first, 4), **_summary(seconds), "scrapes": scrapes, "last_parts_s": parts}
            figures["lag_samples"] = samples
        instance.dispose()
        kafka.admin().delete_topics(extra, operation_timeout=30)
        return figures


def ops(stack: LocalStack) -> dict[str, Any]:
    return {"ops_scrape": scrape_cost(stack)}


if __name__ == "__main__":
    import json

    from pipeline_defs_tests.support.stack import BENCH_STACK

    BENCH_STACK.run("up")
    print(json.dumps(ops(BENCH_STACK), indent=2))
