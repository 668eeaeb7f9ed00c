"""Peak memory of an xact_attachments run that streams one attachment from the local host to
Azurite, for a tiny file and large ones.

Each size is its own pipeline under the daemon: one event naming one attachment, the sensors
plan the runs, and the xact_attachments run worker (the in-process executor runs the step in
it) is sampled for its peak resident set (VmHWM) until the inventory row lands."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from bench.attachments import HOST
from bench.daemon import pipeline, run_worker_pid, wait_until
from bench.ingest import event_bytes
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs_tests.support.stack import LocalStack
from pipeline_sim.attachment_host import AttachmentHost

JOB = "xact_attachments_job"


def peak_for_sizes(stack: LocalStack, sizes: list[int]) -> list[dict]:
    host = AttachmentHost(host_name=HOST).start_in_process()
    try:
        results = [_peak_in_run(stack, host, size) for size in sizes]
    finally:
        host.stop_process()
    tiny = results[0]["peak_rss_mib"]
    for result in results:
        result["growth_over_smallest_mib"] = round(result["peak_rss_mib"] - tiny, 1)
    return results


def _peak_in_run(stack: LocalStack, host: AttachmentHost, size: int) -> dict:
    with pipeline(stack, files_on_azurite=True) as run:
        value, key = event_bytes(0, attachments=[host.url(f"big/{size}/{run.name}.pdf")])
        run.resources["kafka"].produce(run.topics.xact.events, [OutRecord(value, key)])
        run.start_daemon()
        instance = run.instance()
        peaks: dict[int, int] = {}

        def finished() -> bool:
            runs = instance.get_runs(filters=dg.RunsFilter(job_name=JOB))
            for candidate in runs:
                pid = run_worker_pid(instance, candidate.run_id)
                if pid is not None:
                    peaks[pid] = max(peaks.get(pid, 0), _peak_rss(pid))
            return any(r.is_success for r in runs) and run.count("xact_attachments") >= 1

        if not wait_until(finished, timeout_s=900, every_s=0.2):
            raise RuntimeError(f"no successful {JOB} run stored the {size}-byte attachment")
        (record,) = [r for r in instance.get_run_records(filters=dg.RunsFilter(job_name=JOB)) if r.dagster_run.is_success]
        assert record.start_time is not None and record.end_time is not None
        seconds = record.end_time - record.start_time
    result = {
        "file_mib": round(size / 2**20, 1),
        "stored": run.count("xact_attachments"),
        "run_seconds": round(seconds, 2),
        "mb_per_s": round(size / seconds / 1e6, 1),
        "run_worker_pid": next(iter(peaks), None),
        "peak_rss_mib": round(max(peaks.values(), default=0) / 2**20, 1),
    }
    print(f"[bench] memory {result}", flush=True)
    return result


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
