"""Alerts to a chat webhook (Microsoft Teams' Workflows webhook: an Adaptive Card message).

The webhook URL carries its own credential, so it is bound with ``dg.EnvVar`` and never logged.
Without one, alerts are logged only.
"""

from __future__ import annotations

import enum
import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import dagster as dg

log = logging.getLogger(__name__)


def teams_message(title: str, facts: Mapping[str, str], link: Optional[str] = None, text: str = "") -> dict:
    """An Adaptive Card in the envelope Teams' incoming-webhook workflows accept."""
    body: list[dict] = [{"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": title, "wrap": True}]
    if text:
        body.append({"type": "TextBlock", "text": text, "wrap": True})
    body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts.items()]})
    card: dict = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in Dagster", "url": link}]
    return {
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}],
    }


class AlertWebhookResource(dg.ConfigurableResource):
    """Where alerts go. ``url`` is bound with ``dg.EnvVar`` (settings ``alerts.webhook_url_env``);
    ``dagster_url`` is the UI's base address, for links in the cards."""

    url: Optional[str] = None
    dagster_url: str = "http://127.0.0.1:3000"
    timeout_s: float = 10.0

    def run_link(self, run_id: str) -> str:
        return f"{self.dagster_url.rstrip('/')}/runs/{run_id}"

    def post(self, message: dict) -> bool:
        """Send ``message``; ``False`` (and a log line) when no webhook is set or it refuses."""
        return self.deliver(message).outcome is Outcome.SENT

    def deliver(self, message: dict) -> Delivery:
        """Send ``message`` and say whether to ask again: a sender that keeps a cursor must not pass
        an alert the webhook could still take, nor stall on one it never will."""
        if not self.url:
            log.warning("alert (no webhook configured): %s", json.dumps(message)[:2000])
            return Delivery(Outcome.LOGGED)
        if not self.url.startswith(("https://", "http://")):  # a setting to fix; the alerts wait for it
            log.warning("alert webhook is not an http(s) URL; alert not sent")
            return Delivery(Outcome.RETRY, "webhook URL is not http(s)")
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            self.url, data=json.dumps(message).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s):  # noqa: S310 - scheme checked above
                return Delivery(Outcome.SENT)  # urlopen raises HTTPError for anything but 2xx
        except urllib.error.HTTPError as exc:  # before URLError, its base; its text holds no URL
            exc.close()
            outcome = Outcome.RETRY if exc.code in (408, 429) or exc.code >= 500 else Outcome.REFUSED
            log.warning("alert webhook answered HTTP %s; %s", exc.code, outcome.value)
            return Delivery(outcome, f"HTTP {exc.code}")
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            log.warning("alert webhook did not take the alert: %s", type(exc).__name__)
            return Delivery(Outcome.RETRY, type(exc).__name__)


class Outcome(enum.Enum):
    SENT = "sent"
    LOGGED = "logged, no webhook configured"
    RETRY = "to be sent again later"  # down, busy, timed out, 408, 429, 5xx, or a URL to fix
    REFUSED = "refused for good"  # any other 3xx/4xx: this message will never be taken


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    reason: str = ""  # why not sent ("HTTP 503", "TimeoutError"); never the URL, which is a secret
