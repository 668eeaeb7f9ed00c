"""Policies shared by every domain: owners, retries, and the partitions of Kafka-fed assets."""

from __future__ import annotations

import logging
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

_LOG = logging.getLogger(__name__)


def ingestion_days_from(start: date) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), timezone="UTC", end_offset=1)


def first_load_day(instance: dg.DagsterInstance, today: date) -> date:
    """The day stored in ``instance``; when none is, the day of its earliest run (an installation
    upgraded to this code keeps its older partitions in view), else ``today``, stored first. Two
    processes loading for the first time at once store the same day (bar a midnight race) and
    both re-read. A stored day that does not parse or lies after ``today`` (a hand edit) counts
    as none: one bad row must not stop the code location from loading."""
    stored = _stored_day(instance, today)
    if stored is not None:
        return stored
    first_runs = instance.get_run_records(limit=1, ascending=True)  # by id: the first run created
    day = min(first_runs[0].create_timestamp.astimezone(UTC).date(), today) if first_runs else today
    instance.run_storage.set_cursor_values({PARTITIONS_START_KEY: day.isoformat()})
    return _stored_day(instance, today) or day


def _stored_day(instance: dg.DagsterInstance, today: date) -> Optional[date]:
    stored = instance.run_storage.get_cursor_values({PARTITIONS_START_KEY}).get(PARTITIONS_START_KEY)
    if stored is None:
        return None
    try:
        day = date.fromisoformat(stored)
    except ValueError:
        day = None
    if day is None or day > today:
        _LOG.warning(
            f"{PARTITIONS_START_KEY}={stored!r} in the Dagster instance is not a day up to today ({today}); replacing it"
        )
        return None
    return day


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
    ran (``first_load_day``), kept in the Dagster instance so the webserver, daemon, code servers
    and run workers on every machine agree on it and it outlives restarts and new images. Without
    ``DAGSTER_HOME`` (an ephemeral instance, unit tests) there is no history: today. An instance
    that cannot be read fails the load, rather than guess a day other processes would not share.

    A configured day after today fails the load: the partitions would have no key for today's
    runs, so every run the sensors plan would fail. It is a typo (a wrong year) more likely than
    a plan, and clamping it to today would move the first day forward, hiding yesterday, every
    day until the configured one. Checked here, not in the settings model, so the ops service and
    the DLQ CLI, which share the settings, still start."""
    today = today or datetime.now(UTC).date()
    if settings.partitions_start is not None:
        start = settings.partitions_start
        if start > today:
            raise ValueError(
                f"settings: partitions_start (PIPELINE_PARTITIONS_START) is {start}, after today ({today}, UTC);"
                " set a day up to today, or unset it to start at the deployment's first day"
            )
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
