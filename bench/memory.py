"""Peak memory while one attachment streams from the local host to Azurite.

Each size runs in a fresh process (``python -m bench.memory <url> <files_root...>``) so its
peak resident set (VmHWM) belongs to that download alone; the host serves from the parent."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.attachments import HOST, bench_http, store_all, tasks_for
from bench.stack import ROOT, BenchStack
from pipeline_defs.lib.attachments import AttachmentInventorySink
from pipeline_defs.lib.retries import Retries
from pipeline_defs.lib.schemas.xact import XACT_ATTACHMENTS
from pipeline_defs.sim.attachment_host import AttachmentHost


def _vm(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def peak_for_sizes(stack: BenchStack, sizes: list[int]) -> list[dict]:
    host = AttachmentHost(host_name=HOST).start_in_process()
    results = []
    try:
        for size in sizes:
            completed = subprocess.run(
                [sys.executable, "-m", "bench.memory", str(host.port), str(size)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"[bench] memory {size / 2**20:.0f} MiB: {result}", flush=True)
    finally:
        host.stop_process()
    tiny = results[0]["peak_rss_mib"]
    for result in results:
        result["growth_over_smallest_mib"] = round(result["peak_rss_mib"] - tiny, 1)
    return results


def _child(port: int, size: int) -> None:
    stack = BenchStack()
    host = AttachmentHost(port=port, host_name=HOST)  # not started: only builds URLs
    sink = AttachmentInventorySink(
        spec=XACT_ATTACHMENTS,
        http=bench_http(4),
        files=stack.azurite_files(),
        retries=Retries(stack.kafka(), [], "bench.unused"),
    )
    before = _vm("VmRSS")
    report, seconds = store_all(sink, tasks_for(host, 1, path=f"big/{size}"))
    print(
        json.dumps(
            {
                "file_mib": round(size / 2**20, 1),
                "stored": report.counts["files_stored"],
                "seconds": round(seconds, 2),
                "mb_per_s": round(size / seconds / 1e6, 1),
                "rss_before_mib": round(before / 2**20, 1),
                "peak_rss_mib": round(_vm("VmHWM") / 2**20, 1),
            }
        )
    )


if __name__ == "__main__":
    _child(int(sys.argv[1]), int(sys.argv[2]))
