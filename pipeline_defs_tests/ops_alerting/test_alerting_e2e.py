"""End to end: Debian's real Prometheus scrapes a ``/metrics`` endpoint, evaluates
deploy/prometheus/alerts.yml and sends what fires to Debian's real Alertmanager, which routes it
through its webhook receiver to the Alertmanager-to-Teams relay
(``python -m pipeline_defs.lib.health.alertmanager_relay``), which posts an Adaptive Card to a
fake Teams webhook. Then the breaker closes and the resolution travels the same way.

The rules run with their ``for:`` durations set to 0 (their timing is what alerts_test.yml
tests under promtool); expressions, labels, annotations and routing are the real ones.

The alert path uses a stand-in ``/metrics`` endpoint (prometheus_client rendering the
contract's names), as the real service cannot be made to report an open breaker on demand; a
second test has the real Prometheus scrape the real ``python -m pipeline_defs.ops`` on the test
stack and evaluate every rule over it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # stubs may or may not be installed

from pipeline_defs_tests.ops_alerting.metric_contract import FALLBACK, contract_names
from pipeline_defs_tests.support.prometheus import (
    ALERTS,
    READY_TIMEOUT_S,
    Service,
    WebhookSink,
    alertmanager,
    exposition,
    free_port,
    http_get_json,
    metrics_endpoint,
    prometheus,
    query,
    started,
    wait_for,
    webhook_sink,
)

pytestmark = pytest.mark.stack

RUNBOOKS = "https://git.example.com/pipeline/blob/main/"
BROKEN_TARGET = "attachments.sim.test"


def pipeline_metrics(breaker_open: bool) -> str:
    """Every contract metric at a healthy value, and the breaker of ``attachments.sim.test``."""
    samples: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {}
    for name, (kind, labels) in FALLBACK.items():
        value = 1.0 if name == "pipeline_health_up" else 0.0
        samples[name] = (kind, [({label: "sample" for label in sorted(labels)}, value)])
    samples["pipeline_circuit_breaker_open"] = (
        "gauge",
        [({"target": BROKEN_TARGET}, 1.0 if breaker_open else 0.0), ({"target": "claimx-api"}, 0.0)],
    )
    return exposition(samples)


def rules_without_waiting(directory: Path) -> Path:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    copy = directory / "alerts.yml"
    copy.write_text(yaml.safe_dump(rules, sort_keys=False))
    return copy


class Chain:
    def __init__(self, teams: WebhookSink, relay: Service, am: Service, prom: Service) -> None:
        self.teams, self.relay, self.alertmanager, self.prometheus = teams, relay, am, prom

    def diagnostics(self) -> str:
        parts = []
        for what, url in [
            ("Prometheus alerts", f"{self.prometheus.url}/api/v1/alerts"),
            ("Prometheus targets", f"{self.prometheus.url}/api/v1/targets?state=active"),
            ("Alertmanager alerts", f"{self.alertmanager.url}/api/v2/alerts"),
        ]:
            try:
                parts.append(f"{what}: {json.dumps(http_get_json(url))[:3000]}")
            except OSError as exc:
                parts.append(f"{what}: {exc!r}")
        for service in (self.prometheus, self.alertmanager, self.relay):
            parts.append(f"--- {service.name} log ({service.log}):\n{service.log_tail(20)}")
        return "\n".join(parts)

    def next_card(self, what: str) -> dict[str, Any]:
        try:
            return self.teams.next(what, timeout_s=READY_TIMEOUT_S)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.diagnostics()}") from None


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[Chain, Any]]:
    with webhook_sink() as teams, metrics_endpoint(pipeline_metrics(breaker_open=True)) as endpoint:
        relay_port = free_port()
        relay_args = [
            sys.executable,
            "-m",
            "pipeline_defs.lib.health.alertmanager_relay",
            f"--port={relay_port}",
            "--webhook-url-env=PIPELINE_TEST_TEAMS_URL",
            f"--runbook-base-url={RUNBOOKS}",
        ]
        relay_url = f"http://127.0.0.1:{relay_port}"
        with (
            started(
                "relay", relay_args, relay_url, tmp_path, ready_path="/healthz", env={"PIPELINE_TEST_TEAMS_URL": teams.url}
            ) as relay,
            alertmanager(tmp_path, f"{relay_url}/alertmanager") as am,
            prometheus(
                tmp_path,
                endpoint.address,
                rule_file=rules_without_waiting(tmp_path),
                alertmanager_address=am.url.removeprefix("http://"),
            ) as prom,
        ):
            yield Chain(teams, relay, am, prom), endpoint


def test_an_open_breaker_reaches_teams_and_so_does_its_resolution(chain: tuple[Chain, Any]) -> None:
    alerts, endpoint = chain
    message = alerts.next_card("the firing alert in Teams")
    # The message is Teams' (Workflows webhook) format: an Adaptive Card attachment.
    assert message["type"] == "message", message
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    title = card["body"][0]["text"]
    # Healthy values everywhere else: the breaker is the only alert that fires.
    assert title == "[FIRING:1] PipelineCircuitBreakerOpen", f"{title}\n{alerts.diagnostics()}"
    text = "\n".join(block.get("text", "") for block in card["body"])
    assert f"Circuit breaker for {BROKEN_TARGET} is open" in text
    facts = {fact["title"]: fact["value"] for block in card["body"] if block["type"] == "FactSet" for fact in block["facts"]}
    assert facts["Severity"] == "critical" and facts["Status"] == "firing"
    assert facts["target"] == BROKEN_TARGET
    actions = {action["title"]: action["url"] for action in card["actions"]}
    assert actions["Runbook"] == RUNBOOKS + "docs/runbooks/circuit-breaker.md"
    assert actions["Open in Prometheus"].startswith("http://")

    endpoint.text = pipeline_metrics(breaker_open=False)
    resolved = alerts.next_card("the resolution in Teams")
    while (
        "RESOLVED" not in resolved["attachments"][0]["content"]["body"][0]["text"]
    ):  # a repeat of the firing group may come first
        assert "PipelineCircuitBreakerOpen" in resolved["attachments"][0]["content"]["body"][0]["text"]
        resolved = alerts.next_card("the resolution in Teams")
    assert resolved["attachments"][0]["content"]["body"][0]["text"] == "[RESOLVED:1] PipelineCircuitBreakerOpen"


def test_prometheus_scrapes_the_real_metrics_service_and_every_rule_evaluates(test_stack: Any, tmp_path: Path) -> None:
    """``python -m pipeline_defs.ops`` on the test stack, scraped by the real Prometheus with the
    real rules (their real ``for:``): the target is up, what it exposes is in the contract, and
    every rule evaluates without error; the metrics service being up, PipelineMetricsDown is
    not pending."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    port = free_port()
    env = {
        "DAGSTER_HOME": str(home),
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": test_stack.bootstrap_servers,
        "PIPELINE_SOURCE_KAFKA__BOOTSTRAP_SERVERS": test_stack.bootstrap_servers,
        "PIPELINE_STORAGE__LAKE_ROOT": str(tmp_path / "tables"),
    }
    service_args = [sys.executable, "-m", "pipeline_defs.ops", "--host=127.0.0.1", f"--port={port}"]
    with (
        started("metrics-service", service_args, f"http://127.0.0.1:{port}", tmp_path, ready_path="/health/live", env=env),
        prometheus(tmp_path, f"127.0.0.1:{port}") as prom,
    ):

        def scraped() -> set[str] | None:
            status, answer = query(prom.url, 'group by (__name__) ({job="pipeline", __name__=~"pipeline_.+"})')
            names = {s["metric"]["__name__"] for s in answer.get("data", {}).get("result", [])} if status == 200 else set()
            return names if "pipeline_health_up" in names and "pipeline_kafka_consumer_lag" in names else None

        exposed = wait_for(f"Prometheus scraping the metrics service (log: {prom.log})", scraped)
        assert exposed <= contract_names(), f"exposed outside the contract: {sorted(exposed - contract_names())}"

        def evaluated() -> list[dict] | None:
            groups = http_get_json(f"{prom.url}/api/v1/rules")["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(rule["health"] != "unknown" for rule in rules) else None  # unknown: not evaluated yet

        rules = wait_for("every rule evaluated once", evaluated)
        assert len(rules) == sum(len(group["rules"]) for group in yaml.safe_load(ALERTS.read_text())["groups"])
        unhealthy = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
        assert not unhealthy, unhealthy
        assert {rule["name"]: rule["state"] for rule in rules}["PipelineMetricsDown"] == "inactive"
