#!/usr/bin/env bash
# Benchmarks against the real local stack (.stack-bench, its own ports); results in
# bench/results/. Arguments go to `python -m bench.run` (e.g. --only downloads,memory).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash deploy/stack.sh install
trap 'STACK_DIR=$ROOT/.stack-bench bash deploy/stack.sh down' EXIT
.venv/bin/python -m bench.run "$@"
