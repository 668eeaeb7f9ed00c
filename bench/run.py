"""Run the benchmarks against the real local stack and write bench/results/
(results.json, results.md, throughput_latency.png).

    python -m bench.run                           # everything (about 25 minutes)
    python -m bench.run --only ingest,latency
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.attachments import concurrency_sweep
from bench.backlog import backlog
from bench.cdc import latency as cdc_latency
from bench.cdc import throughput as cdc_throughput
from bench.claimx import enrichment
from bench.eventhouse import poller_throughput
from bench.ingest import ceiling, latency, sensor_writers, sustained_ingest
from bench.memory import peak_for_sizes
from bench.ops import ops
from bench.report import RESULTS, load, save
from bench.scaleout import scaleout
from bench.streaming import drain, idle, soak, under_load
from bench.validation import validation_cost
from pipeline_defs_tests.support.stack import BENCH_STACK, LocalStack

MIB = 2**20

BENCHMARKS: dict[str, Callable[[LocalStack], dict[str, Any]]] = {
    "ingest": lambda s: {
        "sustained_ingest": sustained_ingest(s, 1_000_000, max_events_per_run=200_000),
        "ceiling": ceiling(s, 1_000_000),
    },
    "latency": lambda s: {"latency": latency(s, rate=1_000, seconds=120)},  # the batch path
    # The streaming path (issue: seconds, not half a minute): one run, figures side by side.
    "streaming": lambda s: {
        "streaming_under_load": under_load(s, rate=1_000, seconds=300),
        "streaming_idle": idle(s),
        "streaming_drain": drain(s, 1_000_000),
        "validation": validation_cost(),
    },
    # claimx_events at 1,000 events/s (enrichment falls behind at that rate: its own figure is
    # the ClaimX benchmark's); XACT at 100/s beside it.
    "streaming_claimx": lambda s: {"streaming_claimx_load": under_load(s, rate=100, seconds=300, claimx_rate=1_000)},
    "soak": lambda s: {"streaming_soak": soak(s, rate=1_000, seconds=3600)},
    # Azurite (an emulator persisting its whole blob index as one JSON file) is measured on a
    # smaller backlog; the 100k target is the local store's, the embedded default.
    "backlog": lambda s: {"backlog": [backlog(s, 100_000, files_on_azurite=False), backlog(s, 10_000, files_on_azurite=True)]},
    "downloads": lambda s: {"download_concurrency": concurrency_sweep(s)},
    "claimx": lambda s: {"claimx_enrichment": enrichment(s, 20_000)},
    "memory": lambda s: {"streaming_memory": peak_for_sizes(s, [64 * 1024, 200 * MIB, 2048 * MIB])},
    # issue: >= 5,000 events/s from the Kusto double into events.raw; 300k rows a case
    "eventhouse": lambda s: {"eventhouse_poller": poller_throughput(s, 300_000)},
    # issue: >= 5,000 change events/s into PostgreSQL through sensor -> runs, and p95 change -> visible
    # <= 30 s at 1,000/s. The default ingest.max_runs_in_flight (2): two runs of a table may be in
    # flight, each reading its ranges from the offset the table's group has applied up to.
    "cdc": lambda s: {
        "cdc_throughput": cdc_throughput(s, 600_000, max_events_per_run=200_000, batch_events=10_000),
        "cdc_latency": cdc_latency(s, rate=1_000, seconds=120, batch_events=10_000),
    },
    # issue: one /metrics scrape < 1 s with 40 topics x 6 partitions (the ops service)
    "ops": ops,
    # issue "Scale-out": 1, 2, 4 concurrent writer runs of xact_events on disjoint partitions of an
    # 8-partition topic (and 2 on 4 partitions), 600k events each, three rounds; conflicts and exactly-once checked
    "scaleout": lambda s: {"scaleout": scaleout(s, 600_000, partitions=8, writers=(1, 2, 4), few_partitions=4, repeats=3)},
    # the same question through the deployed path (sensor ticks, run queue, pools): ingest.writers_per_table 1 or 2
    "sensor_writers": lambda s: {
        "sensor_writers": sensor_writers(s, 1_000_000, max_events_per_run=200_000, writers=(1, 2), repeats=2)
    },
}


def machine() -> dict:
    memory_kib = int(
        next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")).split()[1]
    )
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "python": platform.python_version(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma list of {sorted(BENCHMARKS)}")
    args = parser.parse_args()
    only = args.only.split(",")
    directory = output_directory(only)
    if directory != RESULTS:
        print(f"[bench] no {RESULTS}/results.json here: these figures go to {directory}; merge them into results.md by hand")
    BENCH_STACK.run("up")
    bench = BENCH_STACK
    results: dict = load(directory)
    for name in only:
        print(f"[bench] running {name}", flush=True)
        results.update(BENCHMARKS[name](bench))
        results["machine"] = machine()
        results.setdefault("measured_at", {})[name] = results["machine"]["measured_at"]
        save(results, directory)
    print(f"[bench] results in {directory}")


def output_directory(only: list[str]) -> Path:
    """results.md is made from results.json, which is not committed: some of the benchmarks,
    run on a clone without it, would replace every committed figure with their own, so their
    figures go to ``partial/`` instead."""
    if set(only) >= set(BENCHMARKS) or (RESULTS / "results.json").exists() or not (RESULTS / "results.md").exists():
        return RESULTS
    return RESULTS / "partial"


if __name__ == "__main__":
    main()
