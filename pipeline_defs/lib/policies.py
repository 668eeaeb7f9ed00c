"""Policies shared by every domain: owners, retries, and the partitions of Kafka-fed assets."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, Optional

import dagster as dg

from pipeline_defs.lib.settings import CoreSettings

# Broker restarts, storage hiccups and Delta commit conflicts heal on their own; the step
# is re-executed against fresh state, which the watermark and key dedup make idempotent.
TRANSIENT_FAILURE_RETRY = dg.RetryPolicy(max_retries=5, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

OWNERS = ["team:claims-data-platform"]

# Daily partitions by ingestion date: at 1,000 events/s a year is 365 partitions, far below
# what Dagster handles well; the Kafka batch a run covers lives in its tags and rows instead.
# end_offset=1 makes today's partition available to the sensor's runs.
# Assets are declared at import with this placeholder; the code location swaps in the one that
# starts at the deployment's first day when it loads (``with_ingestion_days``). Tests that
# materialize an asset on its own keep the placeholder.
ingestion_days = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", end_offset=1)

# Where the first day is kept: the instance's key-value store (PostgreSQL in a deployment).
PARTITIONS_START_KEY = "pipeline_defs/partitions_start"


def ingestion_days_from(start: date) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), timezone="UTC", end_offset=1)


def first_load_day(instance: dg.DagsterInstance, today: date) -> date:
    """The day stored in ``instance``, storing ``today`` first if none is. Two processes loading
    for the first time at once both store the same day (bar a midnight race) and both re-read."""
    storage = instance.run_storage
    stored = storage.get_cursor_values({PARTITIONS_START_KEY}).get(PARTITIONS_START_KEY)
    if stored is None:
        storage.set_cursor_values({PARTITIONS_START_KEY: today.isoformat()})
        stored = storage.get_cursor_values({PARTITIONS_START_KEY}).get(PARTITIONS_START_KEY, today.isoformat())
    return date.fromisoformat(stored)


def _eventhouse_backfill_day(settings: CoreSettings) -> Optional[date]:
    """The day an Eventhouse poller configured to start in the past plans windows from: its runs
    carry that day's partition key, so the partitions must reach back to it."""
    start_from = getattr(getattr(getattr(settings, "eventhouse", None), "poll", None), "start_from", "now")
    if not isinstance(start_from, str) or start_from == "now":
        return None
    instant = datetime.fromisoformat(start_from)
    return (instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)).date()


def partitions_start(settings: CoreSettings, today: Optional[date] = None) -> date:
    """The first ingestion day: ``partitions_start`` when set, else the day the deployment first
    loaded this code location, kept in the Dagster instance so the webserver, daemon, code servers
    and run workers on every machine agree on it and it outlives restarts and new images. Without
    ``DAGSTER_HOME`` (an ephemeral instance, unit tests) there is no history: today. An instance
    that cannot be read fails the load, rather than guess a day other processes would not share."""
    today = today or datetime.now(UTC).date()
    if settings.partitions_start is not None:
        start = settings.partitions_start
    elif os.environ.get("DAGSTER_HOME"):
        with dg.DagsterInstance.get() as instance:
            start = first_load_day(instance, today)
    else:
        start = today
    backfill = _eventhouse_backfill_day(settings)
    return min(start, backfill) if backfill else start


def with_ingestion_days(defs: dg.Definitions, days: dg.DailyPartitionsDefinition) -> dg.Definitions:
    """``defs`` with every asset on the ``ingestion_days`` placeholder moved onto ``days``; asset
    jobs take their partitions from their assets when resolved, so they follow."""

    def swap(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(partitions_def=days) if spec.partitions_def == ingestion_days else spec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # map_asset_specs is "preview"; a test pins what it does
        return defs.map_asset_specs(func=swap)


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
