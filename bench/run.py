"""Run the benchmarks against the real local stack and write bench/results/.

    python -m bench.run                      # everything
    python -m bench.run --only downloads,memory
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone

from bench.attachments import concurrency_sweep
from bench.memory import peak_for_sizes
from bench.report import write_markdown
from bench.stack import ROOT, BenchStack, stack

RESULTS = ROOT / "bench" / "results"
MIB = 2**20

BENCHMARKS = {
    "downloads": lambda s: {"download_concurrency": concurrency_sweep(s)},
    "memory": lambda s: {"streaming_memory": peak_for_sizes(s, [64 * 1024, 200 * MIB, 2048 * MIB])},
}


def machine() -> dict:
    memory_kib = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "python": platform.python_version(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma list of {sorted(BENCHMARKS)}")
    args = parser.parse_args()
    stack("up")
    bench = BenchStack()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results_file = RESULTS / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in args.only.split(","):
        results.update(BENCHMARKS[name](bench))
        results["machine"] = machine()
        results_file.write_text(json.dumps(results, indent=2) + "\n")
        write_markdown(results, RESULTS / "results.md")
    print(f"[bench] results in {RESULTS}")


if __name__ == "__main__":
    main()
