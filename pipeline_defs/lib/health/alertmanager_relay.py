"""Alertmanager to Microsoft Teams: a small HTTP relay.

Alertmanager's webhook receiver posts its own JSON (``version: "4"``, ``status``, ``alerts`` with
their ``labels`` and ``annotations``, ``groupLabels``, ...); Teams' Workflows webhook takes an
Adaptive Card message. The relay takes the former on ``POST /alertmanager`` (any path works) and
posts the latter, built by :func:`pipeline_defs.lib.health.alerts.teams_message` (the card the
Dagster run-failure alerts use), to the Teams webhook URL held by an environment variable::

    TEAMS_WEBHOOK_URL=https://... python -m pipeline_defs.lib.health.alertmanager_relay \\
        --port 9097 --webhook-url-env TEAMS_WEBHOOK_URL \\
        --runbook-base-url https://github.com/<org>/<repo>/blob/main/

It answers 200 once Teams took the card (or, with no webhook URL set, once the card is logged),
502 when Teams did not (Alertmanager retries), 400 for a body that is not Alertmanager's JSON,
413 for one over 1 MiB, 408 to a client that stalls past ``--request-timeout-s`` and 503 at once
while ``--max-concurrent`` requests are in hand (so a few stalled clients cost a few threads, not
one each). ``GET /healthz`` answers 200.
The payload is treated as untrusted: strings are cut short and only http(s) links become buttons.
The webhook URL carries its own credential and is never logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import urljoin

from pipeline_defs.lib.health.alerts import AlertWebhookResource, teams_message

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
MAX_ALERTS_LISTED = 10  # alerts named in one card; the rest are counted
MAX_TEXT = 1000  # characters of any one label or annotation value in the card
DEFAULT_PORT = 9097
REQUEST_TIMEOUT_S = 10.0  # per socket operation: a client that stalls longer is dropped
MAX_CONCURRENT = 16  # requests handled at once (Alertmanager sends one per group and retries)
LINGER_S = 2.0  # a refused client's time to finish sending and read the 503
MAX_LINGERING = 256
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nRetry-After: 5\r\n\r\nbusy\n"


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _strings(value: Any) -> dict[str, str]:
    """A label or annotation map from the payload: only string keys, values as short strings."""
    if not isinstance(value, Mapping):
        return {}
    return {_text(k, 100): _text(v) for k, v in value.items() if isinstance(k, str)}


def _http_url(value: str, base: Optional[str] = None) -> Optional[str]:
    """``value`` as an absolute http(s) URL (a relative one joined to ``base``), else ``None``."""
    if value and base and not value.startswith(("http://", "https://")):
        value = urljoin(base, value)
    return value if value.startswith(("http://", "https://")) else None


def teams_card_for(payload: Mapping[str, Any], runbook_base_url: Optional[str] = None) -> dict:
    """The Teams message (Adaptive Card) for one Alertmanager webhook notification (one group)."""
    raw_alerts = payload.get("alerts")
    alerts: list[Mapping[str, Any]] = [a for a in raw_alerts if isinstance(a, Mapping)] if isinstance(raw_alerts, list) else []
    status = _text(payload.get("status") or "firing", 20)
    group = _strings(payload.get("groupLabels"))
    common = _strings(payload.get("commonLabels"))
    common_annotations = _strings(payload.get("commonAnnotations"))
    name = group.get("alertname") or common.get("alertname") or "Prometheus alert"
    firing = [a for a in alerts if a.get("status", "firing") == "firing"]
    shown = firing if status == "firing" and firing else alerts
    title = f"[{status.upper()}:{len(shown)}] {name}"

    lines = []
    for alert in shown[:MAX_ALERTS_LISTED]:
        annotations, labels = _strings(alert.get("annotations")), _strings(alert.get("labels"))
        summary = annotations.get("summary") or ", ".join(f"{k}={v}" for k, v in labels.items() if k != "alertname")
        lines.append(f"- {summary or labels.get('alertname', name)}")
    if len(shown) > MAX_ALERTS_LISTED:
        lines.append(f"- … and {len(shown) - MAX_ALERTS_LISTED} more")
    description = common_annotations.get("description")
    if description:
        lines.append("")
        lines.append(description)

    facts = {"Status": status, "Severity": common.get("severity", "unknown"), "Alerts": str(len(shown))}
    starts = sorted(_text(a.get("startsAt"), 40) for a in shown if a.get("startsAt"))
    if starts:
        facts["Since"] = starts[0]
    for key, value in common.items():
        if key not in ("alertname", "severity"):
            facts[key] = value
    first_annotations = _strings(shown[0].get("annotations")) if shown else {}
    runbook = common_annotations.get("runbook_url") or first_annotations.get("runbook_url", "")
    if runbook:
        facts["Runbook"] = runbook

    message = teams_message(title, facts, text="\n".join(lines))
    actions = []
    runbook_link = _http_url(runbook, runbook_base_url)
    if runbook_link:
        actions.append({"type": "Action.OpenUrl", "title": "Runbook", "url": runbook_link})
    source = _http_url(_text(shown[0].get("generatorURL"), 2000)) if shown else None
    if source:
        actions.append({"type": "Action.OpenUrl", "title": "Open in Prometheus", "url": source})
    silence = _http_url(_text(payload.get("externalURL"), 2000))
    if silence:
        actions.append({"type": "Action.OpenUrl", "title": "Open in Alertmanager", "url": silence})
    if actions:
        message["attachments"][0]["content"]["actions"] = actions
    return message


class _Handler(BaseHTTPRequestHandler):
    server: RelayServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout_s)  # each read and write, not the whole request

    def _answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/healthz":
            self._answer(200, "ok\n")
        else:
            self._answer(404, "not found\n")

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if length < 0:
            self._answer(400, "bad Content-Length\n")
            return
        if length > MAX_BODY_BYTES:
            self._answer(413, "body too large\n")
            return
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            self._answer(408, "body not received in time\n")
            return
        try:  # a nesting deep enough for a RecursionError is no Alertmanager payload either
            payload = json.loads(body)
            if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
                raise ValueError("no alerts list")
            message = teams_card_for(payload, self.server.runbook_base_url)
        except (ValueError, RecursionError):
            self._answer(400, "not an Alertmanager webhook payload\n")
            return
        if not self.server.webhook.url:  # logged by post(); a retry would only log it again
            self.server.webhook.post(message)
            self._answer(200, "logged, no webhook configured\n")
        elif self.server.webhook.post(message):
            self._answer(200, "sent\n")
        else:
            self._answer(502, "Teams did not take the message\n")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def _read_to_end(request: socket.socket) -> bool:
    """Discards what the client sent so far; ``True`` once it hung up (or the socket failed)."""
    try:
        while request.recv(65536):
            pass
    except BlockingIOError:
        return False
    except OSError:
        pass
    return True


class RelayServer(ThreadingHTTPServer):
    """One thread per request, at most ``max_concurrent`` of them: the rest get a 503 from the
    accepting thread, which never waits on a client."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        webhook: AlertWebhookResource,
        runbook_base_url: Optional[str] = None,
        *,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        max_concurrent: int = MAX_CONCURRENT,
    ):
        super().__init__(address, _Handler)
        self.webhook = webhook
        self.runbook_base_url = runbook_base_url
        self.request_timeout_s = request_timeout_s
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._lingering: deque[tuple[float, socket.socket]] = deque()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """503 without blocking. The socket lingers, read and discarded by ``service_actions``:
        closed while the client still sends, it would reset the connection before the answer."""
        request.setblocking(False)
        try:
            request.send(_BUSY)
            request.shutdown(socket.SHUT_WR)
        except OSError:
            request.close()
            return
        self._lingering.append((time.monotonic(), request))
        while len(self._lingering) > MAX_LINGERING:
            self._lingering.popleft()[1].close()

    def service_actions(self) -> None:
        """Closes each refused socket once its client hung up, or after ``LINGER_S``."""
        now, lingering = time.monotonic(), self._lingering
        self._lingering = deque()
        for since, request in lingering:
            if now - since < LINGER_S and not _read_to_end(request):
                self._lingering.append((since, request))
            else:
                request.close()

    def server_close(self) -> None:
        super().server_close()
        for _, request in self._lingering:
            request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not socketserver's traceback on stderr: a client that hung up is routine."""
        log.warning("request from %s failed: %s", client_address[0], type(sys.exception()).__name__)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_defs.lib.health.alertmanager_relay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--webhook-url-env", default="TEAMS_WEBHOOK_URL", help="env var holding the Teams webhook URL")
    parser.add_argument("--runbook-base-url", default=None, help="base for relative runbook_url annotations")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="for the post to Teams")
    parser.add_argument("--request-timeout-s", type=float, default=REQUEST_TIMEOUT_S, help="per client socket operation")
    parser.add_argument("--max-concurrent", type=int, default=MAX_CONCURRENT, help="requests in hand; more get 503")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = os.environ.get(args.webhook_url_env)
    if not url:
        log.warning("%s is not set: alerts are logged, not sent", args.webhook_url_env)
    server = RelayServer(
        (args.host, args.port),
        AlertWebhookResource(url=url, timeout_s=args.timeout_s),
        args.runbook_base_url,
        request_timeout_s=args.request_timeout_s,
        max_concurrent=args.max_concurrent,
    )
    log.info("relaying Alertmanager webhooks on http://%s:%d to Teams", *server.server_address[:2])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
