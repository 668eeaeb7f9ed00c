#!/usr/bin/env bash
# The whole test suite against real services, one command. Installs what is missing, lets the
# tests start the test stack (.stack-test, its own ports), and stops it afterwards unless
# KEEP_STACK=1. Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash deploy/stack.sh install
# Each run starts with an empty test broker, unless one is still up from a KEEP_STACK=1 run.
if ! STACK_DIR=$ROOT/.stack-test bash deploy/stack.sh status | grep -q "^kafka: running"; then
  rm -rf "$ROOT/.stack-test/kafka/data"
fi
if [[ ${KEEP_STACK:-0} != 1 ]]; then
  trap 'STACK_DIR=$ROOT/.stack-test bash deploy/stack.sh down' EXIT
fi
.venv/bin/pytest "$@"
