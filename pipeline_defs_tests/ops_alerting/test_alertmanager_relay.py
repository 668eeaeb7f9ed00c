"""The Alertmanager-to-Teams relay (pipeline_defs.lib.health.alertmanager_relay): the card it
makes of Alertmanager's webhook payload, and its HTTP answers, also to hostile clients (deep
nesting, stalled bodies, more requests than it takes at once)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline_defs.lib.health.alertmanager_relay import MAX_ALERTS_LISTED, RelayServer, teams_card_for
from pipeline_defs.lib.health.alerts import AlertWebhookResource
from pipeline_defs_tests.support.prometheus import WebhookSink, webhook_sink

RUNBOOKS = "https://git.example.com/pipeline/blob/main/"


def alert(target: str, status: str = "firing") -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "PipelineCircuitBreakerOpen", "severity": "critical", "target": target},
        "annotations": {
            "summary": f"Circuit breaker for {target} is open",
            "description": "Calls are refused.",
            "runbook_url": "docs/runbooks/circuit-breaker.md",
        },
        "startsAt": "2026-12-05T08:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=x",
        "fingerprint": "abc",
    }


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="PipelineCircuitBreakerOpen"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "teams",
        "groupLabels": {"alertname": "PipelineCircuitBreakerOpen"},
        "commonLabels": {"alertname": "PipelineCircuitBreakerOpen", "severity": "critical"},
        "commonAnnotations": {"description": "Calls are refused.", "runbook_url": "docs/runbooks/circuit-breaker.md"},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": list(alerts),
    }


def card_of(message: dict[str, Any]) -> dict[str, Any]:
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] and card["$schema"].startswith("http://adaptivecards.io/")
    return card


def card_text(card: dict[str, Any]) -> str:
    return "\n".join(block.get("text", "") for block in card["body"])


def facts_of(card: dict[str, Any]) -> dict[str, str]:
    (fact_set,) = [block for block in card["body"] if block["type"] == "FactSet"]
    return {fact["title"]: fact["value"] for fact in fact_set["facts"]}


def test_a_firing_group_becomes_an_adaptive_card() -> None:
    card = card_of(teams_card_for(payload(alert("a.example"), alert("b.example")), RUNBOOKS))
    assert card["body"][0]["text"] == "[FIRING:2] PipelineCircuitBreakerOpen"
    text = card_text(card)
    assert "Circuit breaker for a.example is open" in text and "Circuit breaker for b.example is open" in text
    assert "Calls are refused." in text
    facts = facts_of(card)
    assert facts["Severity"] == "critical" and facts["Status"] == "firing" and facts["Alerts"] == "2"
    assert facts["Since"] == "2026-12-05T08:00:00Z"
    assert {action["title"]: action["url"] for action in card["actions"]} == {
        "Runbook": RUNBOOKS + "docs/runbooks/circuit-breaker.md",
        "Open in Prometheus": "http://prometheus.example:9090/graph?g0.expr=x",
        "Open in Alertmanager": "http://alertmanager.example:9093",
    }


def test_a_resolved_group_says_so() -> None:
    card = card_of(teams_card_for(payload(alert("a.example", "resolved"), status="resolved")))
    assert card["body"][0]["text"] == "[RESOLVED:1] PipelineCircuitBreakerOpen"
    # No base URL: the runbook is a fact, not a button.
    assert facts_of(card)["Runbook"] == "docs/runbooks/circuit-breaker.md"
    assert "Runbook" not in {action["title"] for action in card["actions"]}


def test_a_large_group_is_listed_in_part() -> None:
    many = [alert(f"host{i}.example") for i in range(MAX_ALERTS_LISTED + 5)]
    text = card_text(card_of(teams_card_for(payload(*many))))
    assert f"host{MAX_ALERTS_LISTED - 1}.example" in text and f"host{MAX_ALERTS_LISTED}.example" not in text
    assert "and 5 more" in text


def test_hostile_payload_values_stay_harmless() -> None:
    hostile = alert("x" * 100_000)
    hostile["generatorURL"] = "javascript:alert(1)"
    hostile["labels"] = {"alertname": ["not", "a", "string"], 7: "seven"}
    message = payload(hostile)
    message["alerts"].append("not an alert")
    message["externalURL"] = None
    message["commonLabels"] = "nope"
    card = card_of(teams_card_for(message, RUNBOOKS))
    assert len(json.dumps(card)) < 10_000
    assert all(action["url"].startswith("https://") for action in card.get("actions", []))


@pytest.fixture
def teams() -> Iterator[WebhookSink]:
    with webhook_sink() as sink:
        yield sink


@contextlib.contextmanager
def relay_for(url: str | None, **options: Any) -> Iterator[str]:
    server = RelayServer(("127.0.0.1", 0), AlertWebhookResource(url=url, timeout_s=5), RUNBOOKS, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def relay(teams: WebhookSink) -> Iterator[str]:
    with relay_for(teams.url) as url:
        yield url


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def announced_too_large(url: str) -> int:
    """POST announcing a 2 MiB body (never sent): the relay answers from the header alone."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest("POST", "/alertmanager")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(2 << 20))
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_relay_posts_the_card_to_teams(relay: str, teams: WebhookSink) -> None:
    assert post(f"{relay}/alertmanager", json.dumps(payload(alert("a.example"))).encode()) == 200
    card = card_of(teams.next("the relayed card", timeout_s=10))
    assert "PipelineCircuitBreakerOpen" in card["body"][0]["text"]
    with urllib.request.urlopen(f"{relay}/healthz", timeout=5) as response:
        assert response.status == 200


def test_the_relay_refuses_what_is_not_alertmanager_s(relay: str, teams: WebhookSink) -> None:
    assert post(relay, b"{not json") == 400
    assert post(relay, b'{"alerts": "none"}') == 400
    assert post(relay, b"[]") == 400
    assert announced_too_large(relay) == 413
    assert teams.received.empty()


def test_teams_refusing_is_a_502_for_alertmanager_to_retry(relay: str, teams: WebhookSink) -> None:
    teams.status = 500
    assert post(relay, json.dumps(payload(alert("a.example"))).encode()) == 502


def test_without_a_webhook_the_card_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with relay_for(None) as url, caplog.at_level("WARNING"):
        assert post(url, json.dumps(payload(alert("a.example"))).encode()) == 200
    assert "PipelineCircuitBreakerOpen" in caplog.text


def test_any_nesting_is_answered(relay: str, teams: WebhookSink) -> None:
    """Too deep for the decoder is a 400; just shallow enough is a card (either way, an answer)."""
    assert post(relay, b"[" * 200_000) == 400
    assert post(relay, b'{"alerts": [' + b"[" * 100_000 + b"]}") == 400
    for depth in (900, 990, 1100):
        label = b"[" * depth + b"]" * depth
        assert post(relay, b'{"alerts": [{"labels": {"x": ' + label + b"}}]}") in (200, 400)


def stalled(url: str, request: bytes) -> socket.socket:
    """A client that sends ``request`` and then nothing."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    client = socket.create_connection((host, int(port)), timeout=30)
    client.sendall(request)
    return client


STALLED_BODY = b"POST /alertmanager HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{"
STALLED_HEADERS = b"POST /alertmanager HTTP/1.1\r\nHost: x\r\nContent-Len"


def wait_for_threads(expected: int, bound_s: float = 30.0) -> None:
    deadline = time.monotonic() + bound_s
    while threading.active_count() != expected:
        assert time.monotonic() < deadline, f"{threading.active_count()} threads, expected {expected}"
        time.sleep(0.05)


def test_a_stalled_client_is_dropped_and_its_thread_ends() -> None:
    with relay_for(None, request_timeout_s=0.3) as url:
        baseline = threading.active_count()
        clients = [stalled(url, STALLED_BODY) for _ in range(5)] + [stalled(url, STALLED_HEADERS) for _ in range(5)]
        try:
            answers = [client.recv(100) for client in clients]  # the relay speaks or hangs up first
        finally:
            for client in clients:
                client.close()
        assert all(answer.startswith(b"HTTP/1.0 408 ") for answer in answers[:5])
        assert all(answer == b"" or b" 408 " in answer for answer in answers[5:])
        wait_for_threads(baseline)


def test_over_the_cap_a_request_gets_503_at_once(relay: str, teams: WebhookSink) -> None:
    with relay_for(teams.url, max_concurrent=2, request_timeout_s=60) as url:
        baseline = threading.active_count()
        clients = [stalled(url, STALLED_BODY) for _ in range(2)]
        try:
            wait_for_threads(baseline + 2)
            assert post(url, json.dumps(payload(alert("a.example"))).encode()) == 503
            assert teams.received.empty()
        finally:
            for client in clients:
                client.close()
        wait_for_threads(baseline)  # the slots are free again
        assert post(url, json.dumps(payload(alert("a.example"))).encode()) == 200
