"""The streaming path under load, through dagster-daemon and its streaming runs: produce ->
visible latency for xact_events and claimx_events at 1,000 events/s while the download and
ClaimX paths run, attachment task -> inventory row latency, the CPU the whole stack uses, the
idle pipeline's CPU, a 1M backlog drained beside the raw ceiling, and files per day partition
after a long run and one maintenance run."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from bench.attachments import HOST
from bench.claimx import MEDIA_HOST, TOKEN, claimx_settings_env
from bench.cpu import CpuMeter
from bench.daemon import PipelineUnderTest, pipeline, wait_until
from bench.ingest import ceiling, event_bytes, produce
from pipeline_defs.lib.delta.maintenance import Layout, maintain
from pipeline_defs.lib.ingest.stream_jobs import STREAM_TAG
from pipeline_defs_tests.support.stack import LocalStack
from pipeline_sim.attachment_host import AttachmentHost
from pipeline_sim.claimx_api import ClaimXApiDouble
from pipeline_sim.claimx_events import ClaimXEventSource
from pipeline_sim.claimx_world import ClaimXWorld
from pipeline_sim.events import encode

STREAMED_FEEDS = 5  # xact_events, xact_attachments, claimx_events, claimx_entities, claimx_attachments
STREAM_ENV = {"PIPELINE_INGEST__STREAM__REPORT_INTERVAL_S": "30"}


@dataclass
class Visibility:
    """Rows as a reader sees them, polled: each new row's latency from its own start time."""

    table: str
    started_column: str  # when the row's record was produced
    since: float  # only rows started after this (epoch seconds) count
    latencies: list[float] = field(default_factory=list)
    _seen_until: datetime | None = None

    def poll(self, run: PipelineUnderTest) -> None:
        scan = run.lake.scan(self.table)
        if scan is None:
            return
        if self._seen_until is not None:
            scan = scan.filter(pl.col("ingested_at") > self._seen_until)
        fresh = scan.select("ingested_at", self.started_column).collect()
        if fresh.height == 0:
            return
        now = time.time()
        self._seen_until = fresh["ingested_at"].max()  # type: ignore[assignment]  # a datetime column's max
        starts = [t.timestamp() for t in fresh[self.started_column].drop_nulls().to_list()]
        self.latencies += [now - t for t in starts if t >= self.since]

    def figures(self) -> dict:
        values = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(values[min(len(values) - 1, int(p * len(values)))], 2) if values else -1

        return {"rows": len(values), "p50_s": pct(0.5), "p95_s": pct(0.95), "p99_s": pct(0.99), "max_s": pct(1.0)}


@contextmanager
def streaming_pipeline(
    stack: LocalStack, warm_up: bool = True
) -> Iterator[tuple[PipelineUnderTest, AttachmentHost, ClaimXEventSource]]:
    """The pipeline with streaming on, an attachment host, the ClaimX API double and its media
    host (each in its own process), and the daemon started: warmed up by a few events of each
    kind, or (``warm_up=False``) with its streaming runs started and no event at all."""
    files = AttachmentHost(host_name=HOST, file_size=16 * 1024).start_in_process()
    media = AttachmentHost(host_name=MEDIA_HOST, file_size=16 * 1024).start_in_process()
    world = ClaimXWorld(media.base_url)
    source = ClaimXEventSource(world, random.Random(1))
    api = ClaimXApiDouble(world, token=TOKEN).start_in_process()
    env = {**STREAM_ENV, **claimx_settings_env(api.base_url)}
    try:
        with pipeline(stack, streaming=True, extra_env=env) as run:
            run.start_daemon()
            if not warm_up:
                instance = run.instance()
                in_flight = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
                streams = lambda: [r for r in instance.get_runs(filters=in_flight) if STREAM_TAG in r.tags]  # noqa: E731
                started = lambda: len(streams()) == STREAMED_FEEDS  # noqa: E731
                assert wait_until(started, timeout_s=300), "the streaming runs did not start"
                yield run, files, source
                return
            kafka = run.resources["kafka"]
            produce(kafka, run.topics.xact.events, 10)
            claimx = [source.event() for _ in range(10)]
            produce(kafka, run.topics.claimx.events, 10, make=lambda i: (encode(claimx[i]), str(i).encode()))
            warm = lambda: run.count("xact_events") >= 10 and run.count("claimx_events") >= 10  # noqa: E731
            assert wait_until(warm, timeout_s=300), "the streaming runs did not start"
            yield run, files, source
    finally:
        for server in (files, media, api):
            server.stop_process()


def cpu_meter(run: PipelineUnderTest, stack: LocalStack) -> CpuMeter:
    postmaster = int((stack.directory / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
    return CpuMeter(
        {
            "pipeline": run.pipeline_pids,  # the daemon, the code server, every run worker
            "kafka": [_pid(stack.directory / "kafka" / "pid")],
            "azurite": [_pid(stack.directory / "azurite" / "pid")],
            "postgres": [postmaster, _pid(stack.directory / "postgres" / "pgbouncer.pid")],
        }
    )


def under_load(stack: LocalStack, rate: int = 1_000, seconds: int = 300, files_share: float = 0.1, claimx_rate: int = 50) -> dict:
    """``rate`` XACT events/s (``files_share`` of them with one attachment), ``claimx_rate``
    ClaimX events/s, for ``seconds``; latencies as a reader polling every 0.5 s sees them."""
    with streaming_pipeline(stack) as (run, files, source):
        started = time.time()
        watched = [
            Visibility("xact_events", "event_timestamp", started),
            Visibility("claimx_events", "event_ingested_at", started),
            Visibility("xact_attachments", "kafka_timestamp", started),
        ]
        meter = cpu_meter(run, stack)
        meter.start()
        producer = run.resources["kafka"].producer(**{"linger.ms": 5})
        rng = random.Random(7)
        sent = claimx_sent = 0
        next_poll = started
        while time.time() - started < seconds:
            now = time.time()
            for _ in range(int((now - started) * rate) - sent):
                urls = [files.url(f"files/{run.name}/{sent}.pdf")] if rng.random() < files_share else None
                value, key = event_bytes(sent, urls, produced_at=datetime.now(UTC))
                producer.produce(run.topics.xact.events, value=value, key=key)
                sent += 1
            for _ in range(int((now - started) * claimx_rate) - claimx_sent):
                event = {**source.event(), "ingested_at": datetime.now(UTC).isoformat()}
                producer.produce(run.topics.claimx.events, value=encode(event), key=str(event["project_id"]).encode())
                claimx_sent += 1
            producer.poll(0)
            if now >= next_poll:
                next_poll = now + 0.5
                for table in watched:
                    table.poll(run)
            time.sleep(0.005)
        producer.flush(30)
        cpu = meter.stop()

        def caught_up() -> bool:
            for table in watched:
                table.poll(run)
            return run.count("xact_events") >= sent + 10

        wait_until(caught_up, timeout_s=120)
        reports = {asset: stream_report(run, asset) for asset in ("xact_events", "claimx_events", "xact_attachments")}
    return {
        "rate": rate,
        "seconds": seconds,
        "xact_events_produced": sent,
        "claimx_events_produced": claimx_sent,
        **{table.table: table.figures() for table in watched},
        "cpu": cpu,
        "stream_reports": reports,
    }


def stream_report(run: PipelineUnderTest, asset: str) -> dict:
    """What the asset's streaming run last reported: micro-batches and where their time went."""
    records = run.instance().fetch_materializations(dg.AssetKey(asset), limit=1).records
    if not records or records[0].asset_materialization is None:
        return {}
    metadata = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    return {k: metadata.get(k) for k in ("micro_batches", "interval_s", "seconds_by_stage", "latency_p95_s", "mode")}


def idle(stack: LocalStack, seconds: int = 300) -> dict:
    """Streaming runs up and waiting, no event ever produced (a warm-up's retries would keep
    batch runs coming for minutes): the CPU the pipeline and the stack use."""
    with streaming_pipeline(stack, warm_up=False) as (run, _, _):
        time.sleep(60)  # the streaming runs' start-up (imports, consumers, tables) settles
        meter = cpu_meter(run, stack)
        meter.start()
        time.sleep(seconds)
        return {"seconds": seconds, **meter.stop()}


def drain(stack: LocalStack, count: int = 1_000_000) -> dict:
    """A backlog of ``count`` events waiting when the daemon starts, drained by the streaming
    run, timed from its first commit; the raw ceiling measured in the same run beside it."""
    with pipeline(stack, streaming=True, extra_env=STREAM_ENV) as run:
        produce(run.resources["kafka"], run.topics.xact.events, count)
        run.start_daemon()
        assert wait_until(lambda: run.count("xact_events") > 0, timeout_s=300), "no streaming run started"
        started = time.monotonic()
        assert wait_until(lambda: run.count("xact_events") >= count, timeout_s=1800, every_s=0.5)
        seconds = time.monotonic() - started
    raw = ceiling(stack, count)
    return {
        "events": count,
        "seconds_from_first_commit": round(seconds, 2),
        "events_per_s": round(count / seconds, 1),
        "ceiling_events_per_s": raw["events_per_s"],
        "ratio_to_ceiling": round(count / seconds / raw["events_per_s"], 3),
    }


def soak(stack: LocalStack, rate: int = 1_000, seconds: int = 3600) -> dict:
    """An hour at ``rate``, then one maintenance run: files per day partition before and after."""
    with streaming_pipeline(stack) as (run, _, _):
        figures = _steady(run, rate, seconds)
        tables = ["xact_events", "xact_attachments", "claimx_events", "claimx_enrichment_log"]
        layouts = {}
        for name in tables:
            table = run.lake.load(name)
            if table is None:
                continue
            done = maintain(table, target_size_bytes=256 * 2**20, retention_hours=168, commit_interval_s=60)
            layouts[name] = {
                "files_before": done.before.files,
                "max_files_per_partition_before": done.before.max_files_per_partition,
                "max_files_per_partition_after": Layout.of(run.lake.load(name)).max_files_per_partition,  # type: ignore[arg-type]
                "seconds": done.seconds,
            }
    return {"rate": rate, "seconds": seconds, **figures, "tables": layouts}


def _steady(run: PipelineUnderTest, rate: int, seconds: int) -> dict:
    watched = Visibility("xact_events", "event_timestamp", time.time())
    producer = run.resources["kafka"].producer(**{"linger.ms": 5})
    started, sent, next_poll = time.time(), 0, 0.0
    while time.time() - started < seconds:
        now = time.time()
        for _ in range(int((now - started) * rate) - sent):
            value, key = event_bytes(sent, produced_at=datetime.now(UTC))
            producer.produce(run.topics.xact.events, value=value, key=key)
            sent += 1
        producer.poll(0)
        if now >= next_poll:
            next_poll = now + 2.0
            watched.poll(run)
        time.sleep(0.005)
    producer.flush(30)
    return {"produced": sent, "xact_events": watched.figures()}


def _pid(path: Path) -> int:
    return int(path.read_text().strip())
