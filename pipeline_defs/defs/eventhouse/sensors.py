"""The poll sensor of an Eventhouse source: it plans poll windows, never past now - lag, and
keeps each window open until a run of it succeeded.

The cursor holds how far windows are planned and the windows still open. A window whose runs
all failed (after the step's retries and the instance's run retries had their turn) is
planned again under a new run key: re-polling a window is harmless, the dedup sees to that.
Planning waits while the job has ``max_runs_in_flight`` runs, or its last runs all failed (a
stalled source: Kusto down, a refused credential), probing once per interval.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from pipeline_defs.defs.eventhouse.settings import EventhouseSettings
from pipeline_defs.lib.ingest.planning import FINISHED, IN_FLIGHT, stalled
from pipeline_defs.lib.ingest.sensors import SENSOR_INTERVAL_S
from pipeline_defs.lib.kusto.poller import PollSettings
from pipeline_defs.lib.kusto.windows import WINDOW_TAG, PollWindow, align, due_windows

MAX_OPEN_WINDOWS = 2_000  # beyond this many unconfirmed windows, planning waits for them


def encode_cursor(planned_until: datetime, open_windows: dict[str, int]) -> str:
    return json.dumps({"planned_until": planned_until.isoformat(), "open": open_windows}, sort_keys=True)


def decode_cursor(cursor: str | None, poll: PollSettings, now: datetime) -> tuple[datetime, dict[str, int]]:
    """How far windows are planned, and the open windows (tag -> attempts). A new or unreadable
    cursor starts at ``start_from``: now (older days are backfills) or a given instant."""
    try:
        state = json.loads(cursor or "")
        planned = datetime.fromisoformat(state["planned_until"]).astimezone(UTC)
        return planned, {str(tag): int(n) for tag, n in dict(state.get("open", {})).items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        if poll.start_from == "now":
            return align(now - timedelta(seconds=poll.lag_s), poll.window_s), {}
        start = datetime.fromisoformat(poll.start_from)
        return (start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)), {}  # naive: UTC


def run_request(job_name: str, window: PollWindow, attempt: int) -> dg.RunRequest:
    suffix = f"#{attempt}" if attempt > 1 else ""
    return dg.RunRequest(
        run_key=f"{job_name}:{window.tag}{suffix}",
        partition_key=window.day.isoformat(),
        tags={WINDOW_TAG: window.tag},
    )


def window_state(instance: dg.DagsterInstance, job_name: str, tag: str, replan_after_s: float) -> str:
    """``done`` (a run of it succeeded), ``busy`` (in flight, not launched yet, or failed too
    recently for the retries to have had their turn) or ``failed``."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, tags={WINDOW_TAG: tag}), limit=20)
    if any(run.status == dg.DagsterRunStatus.SUCCESS for run in runs):
        return "done"
    if not runs or any(run.status not in FINISHED for run in runs):
        return "busy"
    record = instance.get_run_record_by_id(runs[0].run_id)
    ended = record.end_time if record is not None and record.end_time else time.time()
    return "busy" if time.time() - ended < replan_after_s else "failed"


def build_poll_sensor(name: str, job: Any) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={"eventhouse", "ingest"},
        description=(
            "Plans Kusto poll windows [start, end) of ingestion_time(), never past now - lag, and plans a window "
            "again when its runs all failed. Off unless eventhouse.enabled (deploy/run.sh --source eventhouse)."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        settings: EventhouseSettings = context.resources.eventhouse.settings
        poll = settings.poll
        if not settings.enabled:
            return dg.SkipReason("eventhouse.enabled is false: the source topics are fed another way")
        instance = context.instance
        now = datetime.now(UTC)
        planned_until, open_windows = decode_cursor(context.cursor, poll, now)
        requests: list[dg.RunRequest] = []
        for tag, attempts in sorted(open_windows.items()):
            state = window_state(instance, job.name, tag, poll.replan_after_s)
            if state == "done":
                del open_windows[tag]
            elif state == "failed":
                open_windows[tag] = attempts + 1
                requests.append(run_request(job.name, PollWindow.from_tag(tag), attempts + 1))
        ingest = context.resources.ingest.ingest
        in_flight = instance.get_runs_count(dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT)) + len(requests)
        waiting = stalled(instance, job.name, ingest.stall_after_failed_runs, ingest.stall_probe_interval_s)
        budget = poll.max_runs_in_flight - in_flight
        if waiting is None and budget > 0 and len(open_windows) < MAX_OPEN_WINDOWS:
            for span in _spans(
                due_windows(planned_until, now, poll.window_s, poll.lag_s, budget * poll.max_windows_per_run), poll
            )[:budget]:
                requests.append(run_request(job.name, span, 1))
                open_windows[span.tag] = 1
                planned_until = span.end
        cursor = encode_cursor(planned_until, open_windows)
        if not requests:
            reason = waiting or (
                f"{in_flight} runs in flight" if budget <= 0 else f"no window ends before now - {poll.lag_s:g} s"
            )
            return dg.SensorResult(cursor=cursor, skip_reason=reason)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return _sensor


def _spans(windows: list[PollWindow], poll: PollSettings) -> list[PollWindow]:
    """Consecutive windows joined into runs of at most ``max_windows_per_run``, within one day."""
    spans: list[PollWindow] = []
    count = 0
    for window in windows:
        last = spans[-1] if spans else None
        if last is not None and count < poll.max_windows_per_run and last.end == window.start and last.day == window.day:
            spans[-1] = PollWindow(last.start, window.end)
            count += 1
        else:
            spans.append(window)
            count = 1
    return spans
