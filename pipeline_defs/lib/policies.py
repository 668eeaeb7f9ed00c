"""Policies shared by every domain."""

import dagster as dg

# Broker restarts, storage hiccups and Delta commit conflicts heal on their own; the step
# is re-executed against fresh state, which the watermark and key dedup make idempotent.
TRANSIENT_FAILURE_RETRY = dg.RetryPolicy(
    max_retries=5, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

OWNERS = ["team:claims-data-platform"]
