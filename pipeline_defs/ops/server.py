"""The HTTP side: ``/metrics`` (Prometheus text format), ``/health/live`` (the process answers)
and ``/health/ready`` (every component's probe: 200 when all are up, else 503, with each
component's state, latency and error as JSON). A threaded WSGI server from the standard library."""

from __future__ import annotations

import json
import socketserver
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from pipeline_defs.ops.health import HealthChecker

StartResponse = Callable[..., Any]


def ready_body(checker: HealthChecker) -> tuple[bool, dict[str, Any]]:
    results = checker.check()
    ready = all(r.up for r in results)
    return ready, {"status": "ready" if ready else "not ready", "components": {r.component: r.as_json() for r in results}}


def ops_app(registry: CollectorRegistry, checker: HealthChecker) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def _json(start_response: StartResponse, status: str, body: Any) -> list[bytes]:
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/health/live":
            return _json(start_response, "200 OK", {"status": "live"})
        if path == "/health/ready":
            ready, body = ready_body(checker)
            return _json(start_response, "200 OK" if ready else "503 Service Unavailable", body)
        return _json(
            start_response, "404 Not Found", {"error": "not found", "paths": ["/metrics", "/health/live", "/health/ready"]}
        )

    return app


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # Prometheus scrapes every 15 s; the access log would be all noise


def serve(app: Callable[..., Iterable[bytes]], host: str, port: int) -> WSGIServer:
    """A server bound to ``host:port`` (port 0: any free one; ``server.server_port`` says
    which); the caller runs ``serve_forever``."""
    return make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
