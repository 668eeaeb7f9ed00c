#!/usr/bin/env bash
# The whole test suite, one command: installs what is missing, checks lint, format and types,
# then runs pytest against real services (the tests start the test stack, .stack-test, on its
# own ports) and stops the stack afterwards unless KEEP_STACK=1. Extra arguments go to pytest;
# `bash deploy/test.sh -m "not stack"` is the fast lane (no services, well under a minute).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash deploy/stack.sh install
echo "[test] ruff (lint, format) and mypy" >&2
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy
# Each run starts with an empty test broker, unless one is still up from a KEEP_STACK=1 run.
# (status is captured first: `grep -q` closing the pipe early would fail it under pipefail)
test_stack_status=$(STACK_DIR=$ROOT/.stack-test bash deploy/stack.sh status || true)
if ! grep -q "^kafka: running" <<<"$test_stack_status"; then
  rm -rf "$ROOT/.stack-test/kafka/data"
fi
if [[ ${KEEP_STACK:-0} != 1 ]]; then
  trap 'STACK_DIR=$ROOT/.stack-test bash deploy/stack.sh down' EXIT
fi
.venv/bin/pytest "$@"
