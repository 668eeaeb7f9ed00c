"""Policies shared by every domain: owners, retries, and the partitions of Kafka-fed assets."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

# Broker restarts, storage hiccups and Delta commit conflicts heal on their own; the step
# is re-executed against fresh state, which the watermark and key dedup make idempotent.
TRANSIENT_FAILURE_RETRY = dg.RetryPolicy(max_retries=5, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

OWNERS = ["team:claims-data-platform"]

# Daily partitions by ingestion date: at 1,000 events/s a year is 365 partitions, far below
# what Dagster handles well; the Kafka batch a run covers lives in its tags and rows instead.
# end_offset=1 makes today's partition available to the sensor's runs.
ingestion_days = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", end_offset=1)


def scheduled_checks(
    name: str, checks: Sequence[dg.AssetChecksDefinition], cron: str, what: str
) -> tuple[Any, dg.ScheduleDefinition]:
    """``<name>_job`` evaluating ``checks``, and ``<name>_schedule`` running it on ``cron``
    (for checks whose answer changes with time alone, like an entry's age)."""
    job = dg.define_asset_job(f"{name}_job", selection=dg.AssetSelection.checks(*checks), description=what)
    schedule = dg.ScheduleDefinition(
        name=f"{name}_schedule",
        job=job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"{what} ({cron})",
    )
    return job, schedule
