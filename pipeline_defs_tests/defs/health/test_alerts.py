"""The alert sensors on their own (``dg.build_sensor_context``, a local Teams webhook double, no
services): each failed run and failed check posted once, a tick that stops at its budget with the
cursor after the last alert posted, an alert the webhook is down for retried, one it refuses for
good passed."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from pipeline_defs.defs.health import alerts
from pipeline_defs.defs.health.alerts import asset_check_failure_alert_sensor, run_failure_alert_sensor, stored_id
from pipeline_defs.lib.health.alerts import AlertWebhookResource, Outcome


class Webhook(ThreadingHTTPServer):
    """A Teams webhook double: answers ``status(title)``; each request costs ``cost_s`` on a fake
    clock (the sensors' ``monotonic``), so the tick budget is tested without waiting."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status: Callable[[str], int] = lambda title: 202
        self.cost_s = 0.0
        self.now = 0.0
        self.attempts: list[str] = []
        self.taken: list[str] = []
        self.messages: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/workflows/secret-signature"


class _Handler(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        title = message["attachments"][0]["content"]["body"][0]["text"]
        self.server.now += self.server.cost_s
        self.server.attempts.append(title)
        status = self.server.status(title)
        if 200 <= status < 300:
            self.server.taken.append(title)
            self.server.messages.append(message)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    server = Webhook()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(alerts, "monotonic", lambda: server.now)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    """One event log store, as PostgreSQL's is in deployments (the default test instance shards it
    per run, and check evaluations cannot be read across runs by storage id there)."""
    storage = {
        "module": "dagster.core.storage.event_log",
        "class": "ConsolidatedSqliteEventLogStorage",
        "config": {"base_dir": str(tmp_path / "events")},
    }
    with dg.instance_for_test(overrides={"event_log_storage": storage}) as test_instance:
        yield test_instance


def tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, url: str | None, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"alert_webhook": AlertWebhookResource(url=url, dagster_url="http://dagster.example")},
    )
    return sensor.evaluate_tick(context)


def fail_checks(instance: dg.DagsterInstance, count: int) -> None:
    @dg.asset
    def ledger() -> int:
        return 1

    def failing(i: int) -> dg.AssetChecksDefinition:
        @dg.asset_check(asset=ledger, name=f"c{i}")
        def check() -> dg.AssetCheckResult:
            return dg.AssetCheckResult(passed=False, metadata={"missing_rows": i})

        return check

    dg.materialize([ledger, *(failing(i) for i in range(count))], instance=instance)


def titles(count: int) -> list[str]:
    return sorted(f"Asset check failed (ERROR): ledger c{i}" for i in range(count))


def check_title_at(instance: dg.DagsterInstance, cursor: str) -> str:
    """The alert title of the check evaluation the cursor names."""
    (record,) = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, storage_ids=[int(cursor)])
    )
    assert record.event_log_entry.dagster_event is not None
    evaluation = record.event_log_entry.dagster_event.event_specific_data
    assert isinstance(evaluation, dg.AssetCheckEvaluation)
    return f"Asset check failed (ERROR): ledger {evaluation.asset_check_key.name}"


def test_a_failed_asset_check_is_posted_once_and_history_is_not(instance, webhook):
    fail_checks(instance, 1)  # before the sensor's first tick: history
    first = tick(asset_check_failure_alert_sensor, instance, webhook.url, None)
    assert webhook.attempts == [] and first.cursor and "earlier failures are not posted" in first.skip_message
    fail_checks(instance, 1)
    second = tick(asset_check_failure_alert_sensor, instance, webhook.url, first.cursor)
    (message,) = webhook.messages
    card = message["attachments"][0]["content"]
    facts = {f["title"]: f["value"] for f in card["body"][-1]["facts"]}
    assert card["body"][0]["text"] == "Asset check failed (ERROR): ledger c0"
    assert facts["missing_rows"] == "0" and card["actions"][0]["url"] == f"http://dagster.example/runs/{facts['run']}"
    assert second.skip_message == "alerts: 1 sent"
    third = tick(asset_check_failure_alert_sensor, instance, webhook.url, second.cursor)
    assert len(webhook.attempts) == 1 and third.skip_message == "no new failures to post"


def test_a_slow_webhook_stops_the_tick_at_its_budget_and_the_next_tick_goes_on(instance, webhook, monkeypatch):
    monkeypatch.setattr(alerts, "TICK_BUDGET_S", 2.5)
    webhook.cost_s = 1.0  # the third post ends the budget: three a tick
    cursor = tick(asset_check_failure_alert_sensor, instance, webhook.url, None).cursor
    fail_checks(instance, 7)

    data = tick(asset_check_failure_alert_sensor, instance, webhook.url, cursor)
    assert len(webhook.taken) == 3 and "more next tick" in data.skip_message
    assert check_title_at(instance, data.cursor) == webhook.taken[-1]
    sizes = [3]
    while "no new failures" not in data.skip_message:
        before = len(webhook.taken)
        data = tick(asset_check_failure_alert_sensor, instance, webhook.url, data.cursor)
        sizes.append(len(webhook.taken) - before)
    assert sizes == [3, 3, 1, 0]
    assert sorted(webhook.taken) == titles(7) and len(webhook.attempts) == 7  # each once


def test_the_count_cap_stops_a_tick_too(instance, webhook, monkeypatch):
    monkeypatch.setattr(alerts, "ALERTS_PER_TICK", 2)
    cursor = tick(asset_check_failure_alert_sensor, instance, webhook.url, None).cursor
    fail_checks(instance, 3)
    data = tick(asset_check_failure_alert_sensor, instance, webhook.url, cursor)
    assert len(webhook.taken) == 2 and check_title_at(instance, data.cursor) == webhook.taken[-1]
    tick(asset_check_failure_alert_sensor, instance, webhook.url, data.cursor)
    assert sorted(webhook.taken) == titles(3)


def test_an_alert_the_webhook_is_down_for_is_retried_until_it_is_taken(instance, webhook):
    webhook.status = lambda title: 503
    cursor = tick(asset_check_failure_alert_sensor, instance, webhook.url, None).cursor
    fail_checks(instance, 3)
    for _ in range(2):
        data = tick(asset_check_failure_alert_sensor, instance, webhook.url, cursor)
        assert data.cursor in (None, cursor)  # not past the refused alert
        assert "did not take the next one (HTTP 503): retried next tick" in data.skip_message
    assert len(webhook.attempts) == 2  # the first alert of each tick, then the tick stopped

    webhook.status = lambda title: 202
    data = tick(asset_check_failure_alert_sensor, instance, webhook.url, cursor)
    assert sorted(webhook.taken) == titles(3) and data.skip_message == "alerts: 3 sent"
    tick(asset_check_failure_alert_sensor, instance, webhook.url, data.cursor)
    assert sorted(webhook.taken) == titles(3)  # each once


def test_an_unreachable_webhook_keeps_the_alert(instance):
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    cursor = tick(asset_check_failure_alert_sensor, instance, None, None).cursor
    fail_checks(instance, 1)
    data = tick(asset_check_failure_alert_sensor, instance, url, cursor)
    assert data.cursor in (None, cursor) and "(URLError): retried next tick" in data.skip_message


def test_an_alert_refused_for_good_is_logged_and_passed_and_the_others_posted(instance, webhook, caplog, capfd):
    webhook.status = lambda title: 400 if title.endswith(" c1") else 202
    cursor = tick(asset_check_failure_alert_sensor, instance, webhook.url, None).cursor
    fail_checks(instance, 3)
    caplog.clear()
    capfd.readouterr()
    with caplog.at_level("WARNING"):
        data = tick(asset_check_failure_alert_sensor, instance, webhook.url, cursor)
    assert sorted(webhook.taken) == [t for t in titles(3) if not t.endswith(" c1")]
    assert data.skip_message == "alerts: 2 sent, 1 refused for good"
    logged = caplog.text + capfd.readouterr().err  # the sensor's own log goes to the tick's log, not to logging's root
    assert "HTTP 400" in logged and "not retried: Asset check failed (ERROR): ledger c1" in logged
    assert "secret-signature" not in logged and str(webhook.server_port) not in logged
    tick(asset_check_failure_alert_sensor, instance, webhook.url, data.cursor)
    assert len(webhook.attempts) == 3  # the refused one is not asked again


def fail_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    run = instance.add_run(
        dg.DagsterRun(job_name="xact_events_job", tags={"kafka/ranges": "0:0-1"}, status=dg.DagsterRunStatus.STARTED)
    )
    instance.report_run_failed(run, message="KafkaUnavailableError: broker down")
    return run


def test_a_failed_run_is_posted_as_a_teams_card_and_retried_while_the_webhook_is_down(instance, webhook):
    cursor = tick(run_failure_alert_sensor, instance, webhook.url, None).cursor
    run = fail_run(instance)
    webhook.status = lambda title: 429
    data = tick(run_failure_alert_sensor, instance, webhook.url, cursor)
    assert data.cursor in (None, cursor) and "HTTP 429" in data.skip_message and webhook.taken == []

    webhook.status = lambda title: 202
    data = tick(run_failure_alert_sensor, instance, webhook.url, cursor)
    (message,) = webhook.messages
    card = message["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    facts = {f["title"]: f["value"] for f in card["content"]["body"][-1]["facts"]}
    assert facts["run"] == run.run_id and facts["ranges"] == "0:0-1" and facts["job"] == "xact_events_job"
    assert "broker down" in json.dumps(card)
    assert card["content"]["actions"][0]["url"] == f"http://dagster.example/runs/{run.run_id}"
    tick(run_failure_alert_sensor, instance, webhook.url, data.cursor)
    assert len(webhook.taken) == 1  # once


def test_the_cursor_run_failure_sensor_left_carries_on():
    """run_failure_alert_sensor was a ``run_failure_sensor``: its stored cursor is read, not reset."""
    assert stored_id('{"__class__": "RunStatusSensorCursor", "record_id": 42, "update_timestamp": null}') == 42
    assert stored_id("17") == 17
    for unreadable in (None, "", "{not json", "[]", '{"record_id": "x"}', "²"):
        assert stored_id(unreadable) is None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (202, Outcome.SENT),
        *((status, Outcome.RETRY) for status in (408, 429, 500, 503)),
        *((status, Outcome.REFUSED) for status in (400, 404, 413)),
    ],
)
def test_the_webhook_answer_says_whether_to_ask_again(webhook, status, outcome):
    webhook.status = lambda title: status
    resource = AlertWebhookResource(url=webhook.url)
    message = {"attachments": [{"content": {"body": [{"text": "t"}]}}]}
    assert resource.deliver(message).outcome is outcome
    assert resource.post(message) is (outcome is Outcome.SENT)  # the boolean the relay reads


def test_without_a_webhook_the_alert_is_logged(caplog):
    assert AlertWebhookResource().deliver({"type": "message"}).outcome is Outcome.LOGGED
    assert AlertWebhookResource().post({"type": "message"}) is False
    assert "no webhook configured" in caplog.text
