"""results.json -> results.md (every figure next to its target) and throughput_latency.png."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    columns = [c for c in rows[0] if c != "series"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return [*lines, ""]


def targets(results: dict) -> list[dict]:
    """The issue's figures, each with its target and whether it is met."""
    rows = []
    ingest, ceiling = results.get("sustained_ingest"), results.get("ceiling")
    if ingest:
        rows.append(
            {
                "figure": "1. sustained ingest, events/s (first sensor-planned run to last row; daemon, runs, Delta)",
                "measured": ingest["events_per_s"],
                "target": ">= 10,000",
                "met": ingest["events_per_s"] >= 10_000,
            }
        )
        rows.append(
            {
                "figure": "1. the same counted from daemon start (cold start included)",
                "measured": ingest["events_per_s_from_daemon_start"],
                "target": "-",
                "met": "",
            }
        )
    if ingest and ceiling:
        ratio = round(ingest["events_per_s"] / ceiling["events_per_s"], 3)
        rows.append(
            {"figure": "2. ceiling without Dagster, events/s", "measured": ceiling["events_per_s"], "target": "-", "met": ""}
        )
        rows.append({"figure": "2. ratio ingest / ceiling", "measured": ratio, "target": ">= 0.25", "met": ratio >= 0.25})
    for run in results.get("backlog", []):
        minutes = round(run["seconds_all_attachments"] / 60, 2)
        label = f"3. backlog {run['events'] // 1000}k events x2 64 KiB attachments ({run['store']} store), minutes"
        if run["events"] >= 100_000:
            rows.append({"figure": label, "measured": minutes, "target": "< 5", "met": minutes < 5})
        else:
            rows.append(
                {
                    "figure": label + f"; {run['attachments_per_s']} files/s",
                    "measured": minutes,
                    "target": "- (emulator-bound)",
                    "met": "",
                }
            )
    latency = results.get("latency")
    if latency:
        rows.append(
            {
                "figure": "4. latency at 1,000 events/s, p50 / p95 / p99 s",
                "measured": f"{latency['p50_s']} / {latency['p95_s']} / {latency['p99_s']}",
                "target": "p95 <= 5 (the batch path; streaming below)",
                "met": latency["p95_s"] <= 5,
            }
        )
    memory = results.get("streaming_memory")
    if memory:
        big = max(memory, key=lambda r: r["file_mib"])
        rows.append(
            {
                "figure": f"5. RSS growth streaming {big['file_mib']:.0f} MiB to Azurite vs a tiny file, MiB",
                "measured": big["growth_over_smallest_mib"],
                "target": "< 100",
                "met": big["growth_over_smallest_mib"] < 100,
            }
        )
    for run in results.get("download_concurrency", []):
        rows.append(
            {
                "figure": f"6. downloads at concurrency {run['concurrency']} into {run.get('store', 'azurite')}: files/s, MB/s",
                "measured": f"{run['files_per_s']}, {run['mb_per_s']}",
                "target": "-",
                "met": "",
            }
        )
    claimx = results.get("claimx_enrichment")
    if claimx:
        rows.append(
            {
                "figure": f"ClaimX enrichment of {claimx['events']:,} events via the API double, events/s",
                "measured": claimx["events_per_s"],
                "target": "-",
                "met": "",
            }
        )
        rows.append(
            {
                "figure": "ClaimX API calls per 1,000 events",
                "measured": claimx["api_calls_per_1000_events"],
                "target": "-",
                "met": "",
            }
        )
    for case in results.get("eventhouse_poller", []):
        rows.append(
            {
                "figure": f"12. Eventhouse poller, Kusto double -> events.raw acknowledged, {case['case']} "
                f"({case['fed_table_rows']:,} rows), {case['acknowledged']:,} events, events/s",
                "measured": case["events_per_s"],
                "target": ">= 5,000",
                "met": case["events_per_s"] >= 5_000,
            }
        )
    rows += streaming_targets(results) + cdc_targets(results) + scaleout_targets(results) + ops_targets(results)
    faults = results.get("faults")
    if faults:
        rows.append(
            {
                "figure": f"fault scenario ({faults['events_produced']} events): missing / duplicate rows / unaccounted attachments",
                "measured": f"{faults['events_missing']} / {faults['duplicate_event_rows'] + faults['duplicate_inventory_rows']} / {faults['attachments_unaccounted']}",
                "target": "0 / 0 / 0",
                "met": faults["pass"],
            }
        )
    return rows


def _latency_row(label: str, figures: dict | None, p95: float, p99: float | None) -> list[dict]:
    if not figures:
        return []
    target = f"p95 <= {p95:g}" + (f", p99 <= {p99:g}" if p99 is not None else "")
    met = figures["p95_s"] <= p95 and (p99 is None or figures["p99_s"] <= p99)
    measured = f"{figures['p50_s']} / {figures['p95_s']} / {figures['p99_s']} ({figures['rows']:,} rows)"
    return [{"figure": label, "measured": measured, "target": target, "met": met and figures["rows"] > 0}]


def streaming_targets(results: dict) -> list[dict]:
    """The streaming path's figures: latency under load, CPU, drain beside the ceiling, files."""
    rows: list[dict] = []
    load = results.get("streaming_under_load")
    if load:
        claimx_rate = round(load["claimx_events_produced"] / load["seconds"])
        at = f"at {load['rate']:,} XACT events/s (10 % with a file) + {claimx_rate} ClaimX events/s, {load['seconds']} s"
        rows += _latency_row(
            f"7. streaming: produce -> visible in xact_events {at}, p50 / p95 / p99 s", load.get("xact_events"), 5, 8
        )
        rows += _latency_row(
            "7. streaming: produce -> visible in claimx_events, same run, p50 / p95 / p99 s", load.get("claimx_events"), 5, 8
        )
        rows += _latency_row(
            "7. streaming: attachment task -> row in xact_attachments, same run, p50 / p95 / p99 s",
            load.get("xact_attachments"),
            10,
            None,
        )
        cores = load["cpu"]["all_cores"]
        rows.append(
            {
                "figure": "8. CPU of the whole stack under that load, cores of 2",
                "measured": cores,
                "target": "<= 1",
                "met": cores <= 1,
            }
        )
    claimx_load = results.get("streaming_claimx_load")
    if claimx_load:
        claimx_rate = round(claimx_load["claimx_events_produced"] / claimx_load["seconds"])
        rows += _latency_row(
            f"7. streaming: produce -> visible in claimx_events at {claimx_rate:,} ClaimX events/s "
            f"+ {claimx_load['rate']} XACT events/s, {claimx_load['seconds']} s, p50 / p95 / p99 s",
            claimx_load.get("claimx_events"),
            5,
            8,
        )
    idle = results.get("streaming_idle")
    if idle:
        pipeline = idle["pipeline_cores"]
        rows.append(
            {
                "figure": "8. CPU of the idle pipeline (daemon, code server, streaming runs), cores",
                "measured": pipeline,
                "target": "< 0.10",
                "met": pipeline < 0.10,
            }
        )
        rows.append(
            {
                "figure": "8. CPU of the idle stack (Kafka, Azurite, PostgreSQL), cores",
                "measured": round(idle["all_cores"] - pipeline, 3),
                "target": "-",
                "met": "",
            }
        )
    drain = results.get("streaming_drain")
    if drain:
        rows.append(
            {
                "figure": f"9. streaming drain of {drain['events']:,} events, events/s",
                "measured": drain["events_per_s"],
                "target": "-",
                "met": "",
            }
        )
        ratio = drain["ratio_to_ceiling"]
        rows.append(
            {
                "figure": "9. ratio drain / ceiling measured in the same run",
                "measured": ratio,
                "target": ">= 0.25",
                "met": ratio >= 0.25,
            }
        )
    validation = results.get("validation")
    if validation:
        measured = f"{validation['columnar_cpu_s']} vs {validation['per_record_cpu_s']} ({validation['ratio']})"
        rows.append(
            {
                "figure": "10. validating 100k events, columnar vs per-record, CPU s",
                "measured": measured,
                "target": "a fraction",
                "met": validation["ratio"] < 0.5,
            }
        )
    soak = results.get("streaming_soak")
    if soak:
        worst = max((t["max_files_per_partition_after"] for t in soak["tables"].values()), default=0)
        rows.append(
            {
                "figure": f"11. files per day partition after {soak['seconds'] // 60} min at {soak['rate']:,}/s and one maintenance run, worst table",
                "measured": worst,
                "target": "< 50",
                "met": worst < 50,
            }
        )
    return rows


def cdc_targets(results: dict) -> list[dict]:
    """The CDC replication's figures: a backlog drained, and change -> visible at a steady rate."""
    rows: list[dict] = []
    drained = results.get("cdc_throughput")
    if drained:
        rows.append(
            {
                "figure": f"13. CDC: {drained['events']:,} Debezium change events (both demo tables) -> PostgreSQL through "
                f"sensor -> runs (daemon, {drained['runs']} runs), first sensor-planned run to all committed, events/s",
                "measured": drained["events_per_s"],
                "target": ">= 5,000",
                "met": drained["events_per_s"] >= 5_000 and drained.get("behind_log_end") == 0,  # every offset applied
            }
        )
        rows.append(
            {
                "figure": "13. the same counted from daemon start (cold start included)",
                "measured": drained["events_per_s_from_daemon_start"],
                "target": "-",
                "met": "",
            }
        )
    steady = results.get("cdc_latency")
    if steady:
        label = (
            f"13. CDC: change produced -> committed in PostgreSQL at {steady['rate']:,} events/s for {steady['seconds']} s "
            "(daemon, batch runs), p50 / p95 / p99 s"
        )
        rows += _latency_row(label, steady, 30, None)
    return rows


def scaleout_targets(results: dict) -> list[dict]:
    """Concurrent writer runs of xact_events on disjoint partitions: throughput and exactly once."""
    return [
        {
            "figure": f"14. scale-out: {case['events']:,} events, {case['writers']} concurrent writer run(s) of xact_events "
            f"on {case['partitions']} partitions (disjoint sets), launch to all exited, events/s "
            f"[in steps]; commit conflicts",
            "measured": f"{case['events_per_s']:,} [{case['events_per_s_in_steps']:,}]; {case['commit_conflicts']}",
            "target": "rows = events, no offset twice, watermarks at the ends",
            "met": case["correct"],
        }
        for case in results.get("scaleout", [])
    ] + [
        {
            "figure": f"14. scale-out through the sensor: {case['events']:,} events, ingest.writers_per_table "
            f"{case['writers']} (pool limit {case['writers']}), first run planned to last row, events/s",
            "measured": f"{case['events_per_s']:,}",
            "target": "rows = events, no offset twice",
            "met": case["rows"] == case["events"] and case["offsets_twice"] == 0,
        }
        for case in results.get("sensor_writers", [])
    ]


def ops_targets(results: dict) -> list[dict]:
    """One /metrics scrape of the metrics and health service, every cache expired and with the default TTLs."""
    scrape = results.get("ops_scrape")
    if not scrape:
        return []
    size = (
        f"{scrape['topics']} topics x {scrape['partitions'] // scrape['topics']} partitions, {scrape['consumer_groups']} groups"
    )
    return [
        {
            "figure": f"15. ops: one /metrics scrape ({size}), {label}, p50 / p95 / max s",
            "measured": f"{case['p50_s']} / {case['p95_s']} / {case['max_s']}",
            "target": "< 1",
            "met": case["max_s"] < 1,
        }
        for label, case in (("every cache expired", scrape["every_cache_expired"]), ("default TTLs", scrape["default_ttls"]))
    ]


def write_markdown(results: dict, path: Path) -> None:
    lines = ["# Benchmark results", ""]
    machine = results.get("machine", {})
    if machine:
        lines += [
            f"Measured {machine['measured_at']} on {machine['cores']} cores, {machine['memory_gib']} GiB, Python {machine['python']}.",
            "",
        ]
    stamps = results.get("measured_at", {})
    if stamps:
        lines += [
            "Each benchmark with its reference, measured together at: "
            + ", ".join(f"{k} {v}" for k, v in sorted(stamps.items())),
            "",
        ]
    lines += ["## Figures and targets", "", *_table(targets(results))]
    sections = [
        (
            "sustained_ingest",
            "Sustained ingest: a backlog drained through dagster-daemon (sensor ticks, queued runs, Delta commits)",
        ),
        ("ceiling", "Ceiling: confluent-kafka batch consume + polars + Delta append, no Dagster"),
        ("backlog", "Backlog: cold start to every event and attachment landed"),
        ("latency", "Latency: produce time to first poll (every 0.5 s) that sees the row in Delta"),
        ("download_concurrency", "Attachment downloads (local host -> pipeline downloader -> local store or Azurite)"),
        (
            "streaming_memory",
            "Peak memory of an xact_attachments run streaming one attachment to Azurite (one pipeline per size, run worker VmHWM)",
        ),
        ("claimx_enrichment", "ClaimX: events waiting in Kafka to every event enriched (daemon, API double)"),
        ("streaming_drain", "Streaming drain: a backlog waiting when the daemon starts, from the first commit"),
        ("streaming_idle", "Streaming idle: cores used with the streaming runs up and no events"),
        ("validation", "Validating and building the rows of a 100k batch (CPU seconds, best of 3)"),
        (
            "eventhouse_poller",
            "Eventhouse poller: one run tagged with a 10-minute window (60 s windows, 10,000-row pages) from the "
            "Kusto double (own process) to events.raw, every record acknowledged; seconds split by where they went",
        ),
        (
            "cdc_throughput",
            "CDC replication: a backlog of Debezium change events drained into PostgreSQL through dagster-daemon "
            "(sensor ticks, queued runs, one transaction per batch), from the first sensor-planned run",
        ),
        (
            "cdc_latency",
            "CDC replication: produce call -> first poll (every 0.15 s) of _cdc_offsets past the record, daemon running",
        ),
        (
            "scaleout",
            "Scale-out: concurrent writer runs of xact_events (dagster job execute, one process each) on disjoint "
            "Kafka partitions, pool limit = writers",
        ),
        (
            "sensor_writers",
            "Scale-out through the deployed path: sustained ingest (daemon, sensor, run queue) with "
            "ingest.writers_per_table and the pool limit at 1 and 2",
        ),
    ]
    for key, title in sections:
        if key in results:
            value = results[key]
            lines += [f"## {title}", "", *_table(value if isinstance(value, list) else [value])]
    if "faults" in results:
        lines += ["## Fault scenario", "", "```", *results["faults"].get("timeline", []), "```", ""]
    if (path.parent / "throughput_latency.png").exists():
        lines += ["![throughput and latency](throughput_latency.png)", ""]
    path.write_text("\n".join(lines))


def save(results: dict, directory: Path) -> None:
    """results.json, the plot and results.md, from the same figures."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_plot(results, directory / "throughput_latency.png")
    write_markdown(results, directory / "results.md")


def load(directory: Path) -> dict:
    path = directory / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_plot(results: dict, path: Path) -> None:
    ingest, latency = results.get("sustained_ingest"), results.get("latency")
    if not ingest and not latency:
        return
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8))
    if ingest:
        series = ingest["series"]
        times = [t for t, _ in series[1:]]
        rates = [(n1 - n0) / max(t1 - t0, 1e-6) for (t0, n0), (t1, n1) in itertools.pairwise(series)]
        top.plot(times, rates, label="rows/s into xact_events")
        top.axhline(10_000, linestyle="--", color="grey", label="target 10,000/s")
        top.set_title(f"Sustained ingest of {ingest['events']:,} events: {ingest['events_per_s']:,.0f} events/s")
        top.set_xlabel("seconds since daemon start")
        top.set_ylabel("rows/s")
        top.legend()
    if latency:
        buckets: dict[int, list[float]] = {}
        for at, value in latency["series"]:
            buckets.setdefault(int(at // 10) * 10, []).append(value)
        keys = sorted(buckets)
        for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
            bottom.plot(keys, [sorted(buckets[k])[int(q * (len(buckets[k]) - 1))] for k in keys], label=name)
        bottom.axhline(5, linestyle="--", color="grey", label="p95 target 5 s")
        bottom.set_title(f"Latency at {latency['rate']:,} events/s: p95 {latency['p95_s']} s")
        bottom.set_xlabel("seconds since production started (10 s buckets)")
        bottom.set_ylabel("produce -> visible in Delta, s")
        bottom.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
