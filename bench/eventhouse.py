"""The Eventhouse poller: XACT rows waiting in the Kusto double (its own process) -> the poll asset
(one run tagged with a 10-minute window, polled as 60 s windows) -> events.raw, every record
acknowledged (acks=all) before the run succeeds. Twice: with xact_events empty, then with it
holding the first window's rows in today's partition (the exact dedup's Delta scans included)."""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import requests

from bench.daemon import PipelineUnderTest, pipeline
from pipeline_defs.defs.eventhouse.settings import EventhouseConfigResource, EventhouseSettings
from pipeline_defs.defs.xact.assets import xact_events
from pipeline_defs.defs.xact.sensors import xact_events_kafka_sensor
from pipeline_defs.lib.kafka.records import Topic
from pipeline_defs.lib.kusto.poller import PollSettings, WindowPoller
from pipeline_defs.lib.kusto.polling import page_query, window_pages
from pipeline_defs.lib.kusto.resource import KustoConnection, KustoResource
from pipeline_defs.lib.kusto.windows import WINDOW_TAG, PollWindow, align
from pipeline_defs_tests.support.domains.eventhouse import poll_asset
from pipeline_defs_tests.support.kafka import metadata_of, run_all
from pipeline_defs_tests.support.stack import LocalStack
from pipeline_sim.events import xact_event
from pipeline_sim.kusto import KustoDouble

TABLE = "XactEvents"
BENCH_POLL = PollSettings(window_s=60, page_rows=10_000)  # the production defaults


def poller_throughput(stack: LocalStack, rows: int = 300_000, batch: int = 2_500, span_s: int = 600) -> list[dict]:
    start = align(datetime.now(UTC) - timedelta(seconds=2 * span_s + 300), 60)
    if start.date() != (start + timedelta(seconds=2 * span_s)).date():  # keep both windows in one day
        start = datetime.combine(start.date(), datetime.min.time(), tzinfo=UTC) - timedelta(hours=12)
    first = PollWindow(start, start + timedelta(seconds=span_s))
    second = PollWindow(first.end, first.end + timedelta(seconds=span_s))
    double = KustoDouble(tables=[TABLE]).start_in_process()
    connection = KustoConnection(cluster_url=double.base_url)
    kusto = KustoResource(connection=connection)
    try:
        # the double builds its page index at the first query, then merges each extent as it comes
        before = PollWindow(start - timedelta(days=2), start)
        list(window_pages(kusto, page_query(TABLE, "trace_id"), before, timedelta(0), (), 1, "warm-up"))
        with pipeline(stack, max_events_per_run=100_000) as run, dg.instance_for_test() as instance:
            settings = EventhouseSettings(kusto=connection, poll=BENCH_POLL)
            resources = {**run.resources, "eventhouse": EventhouseConfigResource(settings=settings), "kusto": kusto}
            fill_s = fill(double.base_url, first, rows, batch)
            empty = poll_once(run, resources, instance, first, double, "fed table empty", fill_s)
            run_all(xact_events_kafka_sensor, xact_events, resources, instance)  # the first window lands
            fill_s = fill(double.base_url, second, rows, batch)
            held = poll_once(run, resources, instance, second, double, "fed table holding the first window", fill_s)
    finally:
        double.stop_process()
    return [empty, held]


def fill(base_url: str, window: PollWindow, rows: int, batch: int) -> float:
    """``rows`` unique XACT events in extents of ``batch`` spread over the window."""
    rng, started, extents = random.Random(rows), time.perf_counter(), rows // batch
    step = (window.end - window.start) / extents
    with requests.Session() as http:
        for n in range(extents):
            at = window.start + n * step + timedelta(milliseconds=500)
            body = [xact_event(rng, "http://attachments.bench", f"EH-{uuid.uuid4()}", at) for _ in range(batch)]
            answer = http.post(f"{base_url}/_double/ingest/{TABLE}", json={"rows": body, "ingestion_time": at.isoformat()})
            answer.raise_for_status()
    return time.perf_counter() - started


def poll_once(
    run: PipelineUnderTest, resources: dict, instance: Any, window: PollWindow, double: KustoDouble, case: str, fill_s: float
) -> dict:
    kafka, topic = resources["source_kafka"], run.topics.xact.events
    before, fed_rows = ends(kafka, topic), run.count("xact_events")
    timers: defaultdict[str, float] = defaultdict(float)
    spent = ((WindowPoller, "poll"), (WindowPoller, "_known_near"), (WindowPoller, "_held"), (Topic, "send"))
    with ExitStack() as stack:
        for owner, name in spent:
            stack.enter_context(timed(owner, name, timers))
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on: the poll's peak
        rss_at_start = status_mib("VmRSS")
        cpu, double_cpu, started = time.process_time(), cpu_seconds(double), time.perf_counter()
        result = dg.materialize(
            [poll_asset()],
            partition_key=window.day.isoformat(),
            tags={WINDOW_TAG: window.tag},
            resources=resources,
            instance=instance,
        )
        wall_s = time.perf_counter() - started
        cpu, double_cpu = time.process_time() - cpu, cpu_seconds(double) - double_cpu
    assert result.success, "the poll run failed"
    meta, acknowledged = metadata_of(result), ends(kafka, topic) - before
    rest = timers["poll"] - timers["_known_near"] - timers["_held"] - timers["send"] - meta["query_s"]
    return {
        "case": case,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "window": window.tag,
        "fed_table_rows": fed_rows,
        "fill_s": round(fill_s, 1),  # the double's ingest of the window's rows, before the run
        "windows": meta["windows"],
        "pages": meta["pages"],
        "rows_read": meta["rows_read"],
        "produced": meta["new"],
        "acknowledged": acknowledged,
        "duplicates_skipped": meta["duplicates_skipped"],
        "anti_join_ids": meta["anti_join_ids"],
        "run_wall_s": round(wall_s, 2),
        "events_per_s": round(acknowledged / wall_s, 1),
        "poll_s": round(timers["poll"], 2),
        "query_s": round(meta["query_s"], 2),
        "anti_join_delta_s": round(timers["_known_near"], 2),
        "dedup_delta_s": round(timers["_held"], 2),
        "produce_s": round(timers["send"], 2),
        "other_s": round(rest, 2),  # row parsing, json.dumps of each record, set unions
        "poller_cpu_s": round(cpu, 2),
        "double_cpu_s": round(double_cpu, 2),
        "rss_at_start_mib": rss_at_start,  # the bench process (Dagster, the landing runs before) holds this
        "peak_rss_mib": status_mib("VmHWM"),
    }


@contextmanager
def timed(owner: type, name: str, totals: defaultdict[str, float]) -> Iterator[None]:
    """Add the seconds spent in ``owner.name`` to ``totals[name]``."""
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - started

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, real)


def ends(kafka: Any, topic: str) -> int:
    return sum(state.high for state in kafka.partition_states(topic, 10).values())


def cpu_seconds(server: KustoDouble) -> float:
    process = server._process
    if process is None or process.pid is None:
        return 0.0
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def status_mib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return round(int(line.split()[1]) / 1024)
