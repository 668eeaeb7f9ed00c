"""Failed runs and failed asset checks announced on the alert webhook (Teams), or logged when
none is configured."""

import dagster as dg

from pipeline_defs.lib.health.alerts import AlertWebhookResource, teams_message

CHECKS_PER_TICK = 500  # evaluations read per tick; the cursor carries on from the last one


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts every failed run of this code location to the alert webhook (alerts.webhook_url_env).",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alert_webhook: AlertWebhookResource) -> None:
    run = context.dagster_run
    error = context.failure_event.message or "run failed"
    steps = [event.step_key or "?" for event in context.get_step_failure_events()]
    facts = {
        "job": run.job_name,
        "run": run.run_id,
        "failed steps": ", ".join(steps) or "-",
        "partition": run.tags.get("dagster/partition", "-"),
        "ranges": run.tags.get("kafka/ranges", "-")[:300],
    }
    alert_webhook.post(
        teams_message(f"Dagster run failed: {run.job_name}", facts, alert_webhook.run_link(run.run_id), error[:1000])
    )


@dg.sensor(
    name="asset_check_failure_alert_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Posts every failed asset check (ERROR and WARN) to the alert webhook, once each.",
)
def asset_check_failure_alert_sensor(context: dg.SensorEvaluationContext, alert_webhook: AlertWebhookResource) -> None:
    records = context.instance.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            after_cursor=int(context.cursor) if context.cursor and context.cursor.isdigit() else None,
        ),
        limit=CHECKS_PER_TICK,
        ascending=True,
    )
    if context.cursor is None:  # first tick: from now on, not the history
        latest = context.instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=1, ascending=False
        )
        context.update_cursor(str(latest[0].storage_id if latest else 0))
        return
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event is not None else None
        if isinstance(evaluation, dg.AssetCheckEvaluation) and not evaluation.passed:
            alert_webhook.post(failed_check_message(evaluation, record.run_id, alert_webhook))
    if records:
        context.update_cursor(str(records[-1].storage_id))


def failed_check_message(evaluation: dg.AssetCheckEvaluation, run_id: str, webhook: AlertWebhookResource) -> dict:
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
    return teams_message(title, facts, webhook.run_link(run_id), (evaluation.description or "")[:1000])
