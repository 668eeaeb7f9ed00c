#!/usr/bin/env bash
# Benchmarks against the real local stack (.stack-bench, its own ports); results in
# bench/results/.
#   bash deploy/bench.sh [--only ingest,latency,backlog,downloads,memory]   # figures
#   bash deploy/bench.sh faults [--events N] [--short]                     # fault scenario + verdict
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash deploy/stack.sh install
# A disposable stack: Azurite starts empty (it keeps its whole blob index in one JSON file,
# which slows it as blobs pile up from earlier runs).
STACK_DIR=$ROOT/.stack-bench bash deploy/stack.sh down azurite
rm -rf "$ROOT/.stack-bench/azurite/data"
trap 'STACK_DIR=$ROOT/.stack-bench bash deploy/stack.sh down' EXIT
if [[ ${1:-} == faults ]]; then
  shift
  .venv/bin/python -m bench.faults "$@"
else
  .venv/bin/python -m bench.run "$@"
fi
