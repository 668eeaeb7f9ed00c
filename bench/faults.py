"""The fault scenario: events with attachments flow while the broker restarts, a run process
is killed with SIGKILL, Azurite stops for a while and the attachment host answers 503; at the
end every produced event is in xact_events once and every attachment is in xact_attachments
once or in the DLQ with a reason.

    python -m bench.faults            # 50,000 events
    python -m bench.faults --events 500 --short
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from bench.attachments import HOST
from bench.daemon import PipelineUnderTest, pipeline, run_worker_pid, wait_until
from bench.ingest import event_bytes
from bench.report import RESULTS, load, save
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs_tests.support.stack import BENCH_STACK, LocalStack
from pipeline_sim.attachment_host import AttachmentHost


@dataclass(frozen=True)
class Fault:
    at_s: float
    name: str
    act: Callable[[], None]


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    log: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        line = f"t={time.monotonic() - self.started:6.1f}s {what}"
        self.log.append(line)
        print(f"[faults] {line}", flush=True)


def kill_a_run(run: PipelineUnderTest, job_name: str = "xact_events_job", within_s: float = 120) -> str:
    """SIGKILL the process of a run of ``job_name`` while its step executes, so it dies holding
    its Delta table's pool slot: the run monitor must mark it failed, free the slot and retry it."""
    instance = run.instance()
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        for candidate in instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.STARTED])):
            events = [e.dagster_event for e in instance.all_logs(candidate.run_id) if e.dagster_event is not None]
            if not any(event.event_type_value == "STEP_START" for event in events):
                continue
            pid = run_worker_pid(instance, candidate.run_id)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                return f"killed run {candidate.run_id[:8]} ({job_name}, pid {pid}) inside its step"
        time.sleep(0.2)
    return f"no {job_name} run was executing to kill"


def produce_steadily(run: PipelineUnderTest, host: AttachmentHost, events: int, rate: int, trace_ids: list[str]) -> None:
    producer = run.resources["kafka"].producer(**{"message.timeout.ms": 600_000, "linger.ms": 20})
    topic = run.topics.xact.events
    started = time.monotonic()
    for i in range(events):
        value, key = event_bytes(i, attachments=[host.url(f"files/{run.name}/{i}.pdf")])
        trace_ids.append(key.decode())
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 100 == 0:
            producer.poll(0)
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
    if producer.flush(600):
        raise RuntimeError("events were not acknowledged")


def dead_lettered_with_reason(run: PipelineUnderTest) -> set[tuple[str, str]]:
    """(trace_id, url) of the attachments in the downloads DLQ that carry a category and a
    reason, in the payload and in the headers."""
    kafka = run.resources["kafka"]
    topic = run.topics.xact.downloads_dlq
    ranges = [OffsetRange(topic, p, s.low, s.high) for p, s in kafka.partition_states(topic, 10).items()]
    keys = set()
    for batch in kafka.read_ranges(ranges, f"{run.name}-verify", 10_000, 60):
        for message in batch:
            failed = json.loads(message.value())
            headers = dict(message.headers() or [])
            if failed.get("error_category") and failed.get("final_error") and headers.get("__dlq.errors.reason"):
                keys.add((failed["task"]["trace_id"], failed["task"]["attachment_url"]))
    return keys


def fault_effects(run: PipelineUnderTest, host: AttachmentHost, kill_note: str) -> dict:
    """Evidence that each fault hit work in flight, not an idle pipeline."""
    instance = run.instance()
    retried_steps = 0
    for candidate in instance.get_runs():
        retried_steps += sum(
            1
            for e in instance.all_logs(candidate.run_id)
            if e.dagster_event is not None and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
        )
    attempts = run.rows("xact_attachments", ["attempt_count"])
    return {
        "run_killed_in_step": kill_note.startswith("killed"),
        "host_503_answers": host.outage_answers,
        "steps_retried_by_retry_policy": retried_steps,
        "attachments_stored_after_a_retry": int((attempts["attempt_count"] > 1).sum()) if attempts.height else 0,
    }


def verdict(run: PipelineUnderTest, trace_ids: list[str], urls: dict[str, str]) -> dict:
    events = run.rows("xact_events", ["trace_id"])
    inventory = run.rows("xact_attachments", ["trace_id", "attachment_url"])
    expected = {(t, urls[t]) for t in trace_ids}
    stored = {tuple(r) for r in inventory.iter_rows()} if inventory.height else set()
    dead = dead_lettered_with_reason(run)
    return {
        "events_produced": len(trace_ids),
        "events_in_xact_events": events["trace_id"].n_unique() if events.height else 0,
        "events_missing": len(set(trace_ids) - set(events["trace_id"].to_list() if events.height else [])),
        "duplicate_event_rows": events.height - (events["trace_id"].n_unique() if events.height else 0),
        "attachments_expected": len(expected),
        "attachments_in_inventory": len(stored & expected),
        "duplicate_inventory_rows": inventory.height - len(stored),
        "attachments_in_dlq": len((dead - stored) & expected),
        "attachments_unaccounted": len(expected - stored - dead),
    }


def scenario(bench: LocalStack, events: int, rate: int, short: bool) -> dict:
    host = AttachmentHost(host_name=HOST, file_size=16 * 1024).start_in_thread()
    azurite_down = 15 if short else 60
    host_down = 10 if short else 30
    try:
        with pipeline(bench, max_events_per_run=5_000, files_on_azurite=True, retry_delays_s=(5, 10, 20, 40)) as run:
            timeline = Timeline()
            trace_ids: list[str] = []
            kills: list[str] = []
            run.start_daemon()
            producer = threading.Thread(target=produce_steadily, args=(run, host, events, rate, trace_ids))
            producer.start()

            def restart_kafka() -> None:
                bench.run("down", "kafka")
                bench.run("up", "kafka")

            def kill_one() -> None:
                kills.append(kill_a_run(run))
                timeline.note(kills[-1])

            def stop_azurite() -> None:
                bench.run("down", "azurite")
                time.sleep(azurite_down)
                bench.run("up", "azurite")

            def host_outage() -> None:
                host.outage(503)
                time.sleep(host_down)
                host.outage(None)

            faults = [
                Fault(10, "restart the Kafka broker", restart_kafka),
                Fault(25, "kill -9 a run process", kill_one),
                Fault(35, f"stop Azurite for {azurite_down}s", stop_azurite),
                Fault(40 + azurite_down, f"attachment host answers 503 for {host_down}s", host_outage),
            ]
            for fault in faults:
                time.sleep(max(0.0, timeline.started + fault.at_s - time.monotonic()))
                timeline.note(f"begin: {fault.name}")
                fault.act()
                timeline.note(f"end:   {fault.name}")
            producer.join()
            timeline.note(f"all {events} events produced")
            urls = {t: host.url(f"files/{run.name}/{i}.pdf") for i, t in enumerate(trace_ids)}

            def settled() -> bool:
                state = verdict(run, trace_ids, urls)
                return state["events_missing"] == 0 and state["attachments_unaccounted"] == 0

            wait_until(settled, timeout_s=1800 if not short else 600, every_s=10)
            timeline.note("settled" if settled() else "timed out")
            result = verdict(run, trace_ids, urls)
            instance = run.instance()
            runs = instance.get_runs()
            result["runs"] = len(runs)
            result["runs_failed"] = sum(r.status.value == "FAILURE" for r in runs)
            result["runs_retried"] = sum("dagster/parent_run_id" in r.tags for r in runs)
            result["effects"] = fault_effects(run, host, kills[0] if kills else "")
            result["seconds"] = round(time.monotonic() - timeline.started, 1)
            result["timeline"] = timeline.log
    finally:
        host.stop_thread()
    effects = result["effects"]
    result["faults_took_effect"] = (
        effects["run_killed_in_step"] and effects["host_503_answers"] > 0 and effects["steps_retried_by_retry_policy"] > 0
    )
    result["pass"] = (
        result["events_missing"] == 0
        and result["duplicate_event_rows"] == 0
        and result["duplicate_inventory_rows"] == 0
        and result["attachments_unaccounted"] == 0
        and result["faults_took_effect"]
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=1_000, help="events per second while faults happen")
    parser.add_argument("--short", action="store_true", help="shorter outages, for a quick smoke run")
    args = parser.parse_args()
    BENCH_STACK.run("up")
    result = scenario(BENCH_STACK, args.events, args.rate, args.short)
    results = load(RESULTS)
    results["faults"] = result
    results.setdefault("measured_at", {})["faults"] = datetime.now(UTC).isoformat(timespec="seconds")
    save(results, RESULTS)
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=2))
    print("VERDICT:", "PASS" if result["pass"] else "FAIL")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
