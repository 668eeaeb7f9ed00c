"""Failed runs and failed asset checks announced on the alert webhook (Teams), or logged when
none is configured.

Both sensors read the event log after their cursor and post oldest first, moving the cursor past
each alert handled, so each is posted once. A tick stops at the first alert the webhook is down or
busy for (the next tick posts it) and after ``TICK_BUDGET_S``: a tick past the sensor's 60 s gRPC
deadline keeps no cursor at all, and the next would post everything again.
"""

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from time import monotonic
from typing import NamedTuple, Optional

import dagster as dg

from pipeline_defs.lib.health.alerts import AlertWebhookResource, Outcome, teams_message

RECORDS_PER_TICK = 500  # event records read per tick; the cursor carries on from the last one handled
ALERTS_PER_TICK = 100  # posted per tick at most
TICK_BUDGET_S = 20.0  # no post starts later in a tick; one post adds at most the webhook's timeout_s


class Alert(NamedTuple):
    storage_id: int  # of the event record it is for: the cursor passes it once handled
    title: str = ""
    message: Optional[dict] = None  # None: the record needs no alert


@dg.sensor(
    name="run_failure_alert_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Posts every failed run of this code location to the alert webhook (alerts.webhook_url_env), once each.",
)
def run_failure_alert_sensor(context: dg.SensorEvaluationContext, alert_webhook: AlertWebhookResource) -> dg.SkipReason:
    """A plain sensor, not ``run_failure_sensor``: that one moves its cursor past a run whether or
    not the webhook took the alert, so a refused alert would be lost."""
    after = stored_id(context.cursor)
    if after is None:
        latest = context.instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=1).records
        return start_from_now(context, latest[0].storage_id if latest else 0)
    records = context.instance.fetch_run_status_changes(
        dg.RunStatusChangeRecordsFilter(event_type=dg.DagsterEventType.RUN_FAILURE, after_storage_id=after),
        limit=RECORDS_PER_TICK,
        ascending=True,
    ).records
    return post_alerts(context, alert_webhook, run_failure_alerts(context, alert_webhook, records))


def run_failure_alerts(
    context: dg.SensorEvaluationContext, webhook: AlertWebhookResource, records: Iterable[dg.EventLogRecord]
) -> Iterator[Alert]:
    for record in records:
        run = context.instance.get_run_by_id(record.run_id)
        if run is None or not of_this_location(context, run):
            yield Alert(record.storage_id)
            continue
        event = record.event_log_entry.dagster_event
        error = (event.message if event is not None else None) or "run failed"
        steps = [
            entry.dagster_event.step_key or "?"
            for entry in context.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
            if entry.dagster_event is not None
        ]
        facts = {
            "job": run.job_name,
            "run": run.run_id,
            "failed steps": ", ".join(steps) or "-",
            "partition": run.tags.get("dagster/partition", "-"),
            "ranges": run.tags.get("kafka/ranges", "-")[:300],
        }
        title = f"Dagster run failed: {run.job_name}"
        yield Alert(record.storage_id, title, teams_message(title, facts, webhook.run_link(run.run_id), error[:1000]))


def of_this_location(context: dg.SensorEvaluationContext, run: dg.DagsterRun) -> bool:
    """As ``run_failure_sensor`` matches runs: the instance may hold other code locations' runs
    (both sides are None in tests, where nothing is loaded from a code location)."""
    origin = run.remote_job_origin
    here = context.code_location_origin
    return (origin.location_name if origin else None) == (here.location_name if here else None) and (
        origin.repository_origin.repository_name if origin else None
    ) == context.repository_name


@dg.sensor(
    name="asset_check_failure_alert_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Posts every failed asset check (ERROR and WARN) to the alert webhook, once each.",
)
def asset_check_failure_alert_sensor(context: dg.SensorEvaluationContext, alert_webhook: AlertWebhookResource) -> dg.SkipReason:
    after = stored_id(context.cursor)
    if after is None:
        latest = context.instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=1, ascending=False
        )
        return start_from_now(context, latest[0].storage_id if latest else 0)
    records = context.instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after),
        limit=RECORDS_PER_TICK,
        ascending=True,
    )
    return post_alerts(context, alert_webhook, failed_check_alerts(records, alert_webhook))


def failed_check_alerts(records: Iterable[dg.EventLogRecord], webhook: AlertWebhookResource) -> Iterator[Alert]:
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event is not None else None
        if isinstance(evaluation, dg.AssetCheckEvaluation) and not evaluation.passed:
            title, message = failed_check_message(evaluation, record.run_id, webhook)
            yield Alert(record.storage_id, title, message)
        else:
            yield Alert(record.storage_id)


def failed_check_message(evaluation: dg.AssetCheckEvaluation, run_id: str, webhook: AlertWebhookResource) -> tuple[str, dict]:
    severity = evaluation.severity.value if evaluation.severity else "ERROR"
    key = evaluation.asset_check_key
    facts = {
        "asset": key.asset_key.to_user_string(),
        "check": key.name,
        "severity": severity,
        "run": run_id,
        **{name: str(getattr(value, "value", value))[:200] for name, value in list(evaluation.metadata.items())[:8]},
    }
    title = f"Asset check failed ({severity}): {key.asset_key.to_user_string()} {key.name}"
    return title, teams_message(title, facts, webhook.run_link(run_id), (evaluation.description or "")[:1000])


def stored_id(cursor: Optional[str]) -> Optional[int]:
    """The storage id the cursor holds: ours is the number; ``run_failure_sensor``'s (what
    run_failure_alert_sensor was before) a JSON object with ``record_id``. None when unreadable."""
    if cursor and cursor.isascii() and cursor.isdigit():
        return int(cursor)
    try:
        record_id = json.loads(cursor or "").get("record_id")
    except (ValueError, AttributeError):
        return None
    return record_id if isinstance(record_id, int) else None


def start_from_now(context: dg.SensorEvaluationContext, latest: int) -> dg.SkipReason:
    """First tick (or an unreadable cursor): alerts from now on, not the whole history."""
    context.update_cursor(str(latest))
    return dg.SkipReason(f"starting after event record {latest}; earlier failures are not posted")


def post_alerts(context: dg.SensorEvaluationContext, webhook: AlertWebhookResource, alerts: Iterable[Alert]) -> dg.SkipReason:
    """Posts in order, the cursor past each record handled; a refused-for-good alert is logged (its
    title: the webhook URL is a secret) and passed, else it would block every later one."""
    started = monotonic()
    done: Counter[Outcome] = Counter()
    for alert in alerts:
        if alert.message is not None:
            if done.total() >= ALERTS_PER_TICK or monotonic() - started >= TICK_BUDGET_S:
                return dg.SkipReason(
                    f"{summary(done)}; more next tick (at most {ALERTS_PER_TICK} alerts or {TICK_BUDGET_S:g} s a tick)"
                )
            delivery = webhook.deliver(alert.message)
            if delivery.outcome is Outcome.RETRY:
                return dg.SkipReason(
                    f"{summary(done)}; the alert webhook did not take the next one ({delivery.reason}): retried next tick"
                )
            if delivery.outcome is Outcome.REFUSED:
                context.log.warning(f"alert webhook refused an alert for good ({delivery.reason}), not retried: {alert.title}")
            done[delivery.outcome] += 1
        context.update_cursor(str(alert.storage_id))
    return dg.SkipReason(summary(done) if done else "no new failures to post")


def summary(done: Counter[Outcome]) -> str:
    return "alerts: " + (", ".join(f"{done[outcome]} {outcome.value}" for outcome in Outcome if done[outcome]) or "none")
