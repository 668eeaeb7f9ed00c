"""The poll sensor on its own (``dg.build_sensor_context``, no services): windows planned up to
now - lag in runs of consecutive windows within a day, a failed window planned again, a
succeeded one closed, backpressure, and the source switch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import dagster as dg
import pytest

from pipeline_defs.defs.eventhouse.sensors import build_poll_sensor
from pipeline_defs.defs.eventhouse.settings import EventhouseConfigResource, EventhouseSettings
from pipeline_defs.lib.kusto.poller import PollSettings
from pipeline_defs.lib.kusto.windows import WINDOW_TAG, PollWindow
from pipeline_defs.lib.policies import ingestion_days
from pipeline_defs.lib.settings import IngestConfigResource, IngestSettings


@dg.asset(partitions_def=ingestion_days)
def polled() -> None:
    """Stands in for the poll asset."""


polled_job = dg.define_asset_job("polled_job", selection=[polled])
sensor = build_poll_sensor("poll_sensor_under_test", polled_job)
LOCATION = dg.Definitions(assets=[polled], jobs=[polled_job], sensors=[sensor])


@pytest.fixture
def instance() -> Any:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def tick(instance: dg.DagsterInstance, cursor: str | None = None, enabled: bool = True, **poll: Any) -> Any:
    settings = EventhouseSettings(enabled=enabled, poll=PollSettings(**poll))
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "eventhouse": EventhouseConfigResource(settings=settings),
            "ingest": IngestConfigResource(ingest=IngestSettings()),
        },
        definitions=LOCATION,
    )
    return sensor.evaluate_tick(context)


def test_off_unless_the_eventhouse_is_the_source(instance: dg.DagsterInstance) -> None:
    result = tick(instance, enabled=False)
    assert not result.run_requests and "eventhouse.enabled is false" in (result.skip_message or "")


def test_plans_windows_up_to_now_minus_lag_in_runs_within_a_day(instance: dg.DagsterInstance) -> None:
    start = (datetime.now(UTC) - timedelta(days=1)).replace(hour=23, minute=50, second=0, microsecond=0)
    result = tick(instance, start_from=start.isoformat(), window_s=60, lag_s=30, max_windows_per_run=4, max_runs_in_flight=5)
    windows = [PollWindow.from_tag(request.tags[WINDOW_TAG]) for request in result.run_requests]
    assert [w.end - w.start for w in windows] == [timedelta(minutes=4), timedelta(minutes=4), timedelta(minutes=2)] + [
        timedelta(minutes=4)
    ] * 2  # 23:50-23:54, 23:54-23:58, 23:58-00:00 (the day ends), then the next day
    assert windows[0].start == start and all(a.end == b.start for a, b in pairwise(windows))
    assert [r.partition_key for r in result.run_requests] == [w.day.isoformat() for w in windows]
    assert len({r.run_key for r in result.run_requests}) == 5
    cursor = json.loads(result.cursor)
    assert cursor["planned_until"] == windows[-1].end.isoformat() and len(cursor["open"]) == 5
    # a new tick plans nothing twice: the runs are in flight (or not launched yet)
    again = tick(
        instance, result.cursor, start_from=start.isoformat(), window_s=60, lag_s=30, max_windows_per_run=4, max_runs_in_flight=5
    )
    assert {r.tags[WINDOW_TAG] for r in again.run_requests}.isdisjoint(r.tags[WINDOW_TAG] for r in result.run_requests)


def test_never_plans_past_now_minus_the_lag(instance: dg.DagsterInstance) -> None:
    result = tick(instance, window_s=60, lag_s=3600)
    for request in result.run_requests:
        assert PollWindow.from_tag(request.tags[WINDOW_TAG]).end <= datetime.now(UTC) - timedelta(seconds=3600)


def test_a_failed_window_is_planned_again_and_a_succeeded_one_closed(instance: dg.DagsterInstance) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    failed, done = (
        PollWindow(now - timedelta(minutes=10), now - timedelta(minutes=9)),
        PollWindow(now - timedelta(minutes=9), now - timedelta(minutes=8)),
    )
    for window, status in ((failed, dg.DagsterRunStatus.FAILURE), (done, dg.DagsterRunStatus.SUCCESS)):
        instance.add_run(dg.DagsterRun(job_name=polled_job.name, status=status, tags={WINDOW_TAG: window.tag}))
    cursor = json.dumps({"planned_until": (now - timedelta(minutes=8)).isoformat(), "open": {failed.tag: 1, done.tag: 1}})
    result = tick(instance, cursor, window_s=60, lag_s=120, replan_after_s=0, max_runs_in_flight=1)
    assert [(r.tags[WINDOW_TAG], r.run_key) for r in result.run_requests] == [(failed.tag, f"polled_job:{failed.tag}#2")]
    assert json.loads(result.cursor)["open"] == {failed.tag: 2}  # backpressure: the replan took the only place


def test_waits_while_its_runs_are_in_flight(instance: dg.DagsterInstance) -> None:
    for _ in range(2):
        instance.add_run(dg.DagsterRun(job_name=polled_job.name, status=dg.DagsterRunStatus.STARTED))
    result = tick(
        instance, window_s=60, lag_s=0, max_runs_in_flight=2, start_from=(datetime.now(UTC) - timedelta(hours=1)).isoformat()
    )
    assert not result.run_requests and "2 runs in flight" in (result.skip_message or "")
