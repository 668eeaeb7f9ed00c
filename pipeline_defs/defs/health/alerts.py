"""Failed runs announced on the alert webhook (Teams), or logged when none is configured."""

import dagster as dg

from pipeline_defs.lib.health.alerts import AlertWebhookResource, teams_message


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
