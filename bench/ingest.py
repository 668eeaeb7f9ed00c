"""Sustained ingest into xact_events through the deployed path, and the ceiling: the same
events through plain confluent-kafka + polars + Delta append, without Dagster."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import polars as pl
from confluent_kafka import TopicPartition
from deltalake import write_deltalake

from bench.daemon import pipeline, wait_until
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs_tests.support.stack import ROOT, LocalStack


def event_bytes(i: int, attachments: list[str] | None = None, produced_at: datetime | None = None) -> tuple[bytes, bytes]:
    trace_id = f"{uuid.uuid4()}"
    event = {
        "trace_id": trace_id,
        "event_type": "verisk.claims.property.xn.statusChanged"
        if not attachments
        else "verisk.claims.property.xn.documentsReceived",
        "event_subtype": "statusChanged" if not attachments else "documentsReceived",
        "timestamp": (produced_at or datetime.now(UTC)).isoformat(),
        "source_system": "xn",
        "payload": {"assignmentId": f"A{100000 + i % 900000}", "claimNumber": f"CLM-{i}", "carrierId": "C017"},
        "attachments": attachments or [],
    }
    return json.dumps(event, separators=(",", ":")).encode(), trace_id.encode()


def produce(kafka: KafkaResource, topic: str, count: int, make=event_bytes) -> float:
    producer = kafka.producer(**{"linger.ms": 20, "batch.num.messages": 10_000, "queue.buffering.max.messages": 1_000_000})
    started = time.perf_counter()
    for i in range(count):
        value, key = make(i)
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started


def sensor_writers(stack: LocalStack, count: int, max_events_per_run: int, writers: tuple[int, ...], repeats: int) -> list[dict]:
    """``sustained_ingest`` with each ``ingest.writers_per_table`` (and pool limit), the cases
    taking turns ``repeats`` times, so a busy minute of the machine does not favour one."""
    return [sustained_ingest(stack, count, max_events_per_run, n) for _ in range(repeats) for n in writers]


def sustained_ingest(stack: LocalStack, count: int = 500_000, max_events_per_run: int = 100_000, writers: int = 1) -> dict:
    """A backlog of ``count`` events drained through the daemon. The clock starts when the
    first sensor tick plans a run (the daemon's own start-up, loading the code location, is
    not ingest); the time from daemon start is reported beside it."""
    with pipeline(stack, max_events_per_run=max_events_per_run, writers=writers) as run:
        topic = run.topics.xact.events
        produce_seconds = produce(run.resources["kafka"], topic, count)
        print(f"[bench] produced {count} events in {produce_seconds:.1f}s", flush=True)
        started_wall, started = time.time(), time.monotonic()
        run.start_daemon()
        series: list[tuple[float, int]] = []

        def done() -> bool:
            series.append((round(time.monotonic() - started, 2), run.count("xact_events")))
            return series[-1][1] >= count

        wait_until(done, timeout_s=900, every_s=1.0)
        finished_wall = time.time()
        offsets = run.rows("xact_events", ["kafka_partition", "kafka_offset"])
        instance = run.instance()
        records = instance.get_run_records()
        first_planned = min(r.create_timestamp.timestamp() for r in records)
        durations = sorted(round(r.end_time - r.start_time, 1) for r in records if r.end_time and r.start_time)
    from_first_run = finished_wall - first_planned
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "writers": writers,
        "events": count,
        "rows": series[-1][1],
        "offsets_twice": offsets.height - offsets.unique().height,
        "runs": len(records),
        "events_per_run": max_events_per_run,
        "run_seconds": durations,
        "seconds_daemon_start_to_first_run": round(first_planned - started_wall, 2),
        "seconds_first_run_planned_to_done": round(from_first_run, 2),
        "events_per_s": round(count / from_first_run, 1),
        "events_per_s_from_daemon_start": round(count / (finished_wall - started_wall), 1),
        "series": series,
    }


def ceiling(stack: LocalStack, count: int = 500_000, batch: int = 100_000) -> dict:
    """Plain batch consume + polars + Delta append: no Dagster, no validation, no dedup."""
    kafka = stack.kafka()
    topic = f"ceiling.{uuid.uuid4().hex[:8]}"
    kafka.create_topics([topic], 6)
    produce(kafka, topic, count)
    table = str(ROOT / ".stack-bench" / "runs" / topic / "xact_events")
    consumer = kafka.consumer(f"ceiling-{uuid.uuid4().hex[:6]}")
    states = kafka.partition_states(topic, 10)
    consumer.assign([TopicPartition(topic, p, 0) for p in states])
    started = time.perf_counter()
    seen = 0
    while seen < count:
        messages = consumer.consume(num_messages=batch, timeout=1.0)
        values = [value for m in messages if m.error() is None and (value := m.value()) is not None]
        if not values:
            continue
        frame = pl.read_ndjson(b"\n".join(values)).select(
            "trace_id", "event_type", "event_subtype", pl.col("timestamp").str.to_datetime(time_zone="UTC"), "source_system"
        )
        write_deltalake(table, frame.to_arrow(), mode="append")
        seen += len(values)
    seconds = time.perf_counter() - started
    consumer.close()
    return {"events": seen, "seconds": round(seconds, 2), "events_per_s": round(seen / seconds, 1), "batch": batch}


def latency(stack: LocalStack, rate: int = 1_000, seconds: int = 120) -> dict:
    """Produce ``rate`` events/s for ``seconds``; latency = first poll that sees the row in
    Delta minus the event's produce time (the poll runs every 0.5 s, so it adds up to 0.5 s)."""
    with pipeline(stack, max_events_per_run=50_000) as run:
        kafka, topic = run.resources["kafka"], run.topics.xact.events
        run.start_daemon()
        produce(kafka, topic, 10)  # warm-up: wait for the first run to land
        wait_until(lambda: run.count("xact_events") >= 10, timeout_s=180)
        producer = kafka.producer(**{"linger.ms": 5})
        seen_runs: set[str] = set()
        latencies: list[tuple[float, float]] = []  # (seconds since start, latency)
        started = time.time()
        sent = 0
        next_poll = started
        while True:
            now = time.time()
            due = min(int((now - started) * rate), rate * seconds)
            while sent < due:
                value, key = event_bytes(sent, produced_at=datetime.now(UTC))
                producer.produce(topic, value=value, key=key)
                sent += 1
            producer.poll(0)
            if now >= next_poll:
                next_poll = now + 0.5
                latencies += _new_latencies(run, seen_runs, started)
            if sent >= rate * seconds and (len(latencies) >= sent or now - started > seconds + 120):
                break
            time.sleep(0.01)
        producer.flush(30)
    values = sorted(seconds for _, seconds in latencies)

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))], 2) if values else -1

    return {
        "rate": rate,
        "seconds": seconds,
        "produced": sent,
        "seen": len(values),
        "p50_s": pct(0.50),
        "p95_s": pct(0.95),
        "p99_s": pct(0.99),
        "max_s": round(values[-1], 2) if values else -1,
        "series": latencies,
    }


def _new_latencies(run, seen_runs: set[str], started: float) -> list[tuple[float, float]]:
    scan = run.lake.scan("xact_events")
    if scan is None:
        return []
    fresh = (
        scan.filter(~pl.col("dagster_run_id").is_in(list(seen_runs)))
        .filter(pl.col("event_type").str.ends_with("statusChanged"))
        .select("dagster_run_id", "event_timestamp")
        .collect()
    )
    now = time.time()
    seen_runs.update(fresh["dagster_run_id"].unique().to_list())
    return [
        (round(t.timestamp() - started, 2), now - t.timestamp())
        for t in fresh["event_timestamp"].to_list()
        if t.timestamp() >= started
    ]
