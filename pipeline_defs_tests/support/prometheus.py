"""Real Prometheus and Alertmanager (Debian's packages, installed by ``deploy/stack.sh install``)
for a test: each on a port of its own, with its config and data in a temporary directory, never
the packages' services. The configs are rendered from the templates in ``deploy/prometheus/``.

Also the small HTTP doubles around them: a ``/metrics`` endpoint serving a given exposition text
and a webhook sink that records what is posted to it (the fake Teams)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from typing import Any, Optional, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline_defs_tests.support.stack import ROOT

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
BINARIES = {
    "prometheus": "/usr/bin/prometheus",
    "promtool": "/usr/bin/promtool",
    "alertmanager": "/usr/bin/prometheus-alertmanager",
}
READY_TIMEOUT_S = 120.0

T = TypeVar("T")


def binary(name: str) -> str:
    """The path of a Prometheus binary, or a failure saying how to get it."""
    path = BINARIES[name]
    if not Path(path).is_file():
        found = shutil.which(Path(path).name)
        if not found:
            raise AssertionError(
                f"{path} is missing: run `bash deploy/stack.sh install` (Debian's prometheus, prometheus-alertmanager)"
            )
        return found
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(what: str, check: Callable[[], Optional[T]], timeout_s: float = READY_TIMEOUT_S, every_s: float = 0.2) -> T:
    """Poll ``check`` until it returns something other than ``None``/``False``; fail with ``what``."""
    deadline = time.monotonic() + timeout_s
    last_error: Optional[BaseException] = None
    while True:
        try:
            result = check()
            if result is not None and result is not False:
                return result
        except (OSError, ValueError, AssertionError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not after {timeout_s:.0f} s" + (f" (last error: {last_error!r})" if last_error else "")
            )
        time.sleep(every_s)


def render(template: Path, **values: str) -> str:
    return Template(template.read_text()).substitute(values)


def http_get_json(url: str, timeout_s: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


@dataclass
class Service:
    """A binary started for one test; ``log`` holds its stdout and stderr."""

    name: str
    process: subprocess.Popen
    url: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False


@contextlib.contextmanager
def started(
    name: str,
    args: Sequence[str],
    url: str,
    directory: Path,
    ready_path: Optional[str] = "/-/ready",
    env: Optional[Mapping[str, str]] = None,
) -> Iterator[Service]:
    """Run ``args`` (with ``env`` added to the environment) until the block ends (terminate, then
    kill); wait until ``url`` + ``ready_path`` answers 200."""
    log = directory / f"{name}.log"
    environment = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=directory, env=environment
        )
    service = Service(name, process, url, log)
    try:
        if ready_path == "/-/ready":
            wait_for(f"{name} ready on {url} (log: {log})", service.ready)
        elif ready_path:

            def answers() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{service.log_tail()}")
                try:
                    with urllib.request.urlopen(f"{url}{ready_path}", timeout=2) as response:
                        return response.status == 200
                except (urllib.error.URLError, OSError):
                    return False

            wait_for(f"{name} ready on {url}{ready_path} (log: {log})", answers)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@contextlib.contextmanager
def alertmanager(directory: Path, receiver_url: str, group_wait: str = "1s", group_interval: str = "1s") -> Iterator[Service]:
    """Alertmanager on a free port, routing everything to ``receiver_url`` (its webhook receiver);
    clustering off (by default it would listen on 9094, the dev stack's Event Hub port)."""
    work = directory / "alertmanager"
    work.mkdir(parents=True)
    config = work / "alertmanager.yml"
    config.write_text(
        render(
            PROMETHEUS_DIR / "alertmanager.yml",
            TEAMS_RELAY_URL=receiver_url,
            GROUP_WAIT=group_wait,
            GROUP_INTERVAL=group_interval,
        )
    )
    port = free_port()
    args = [
        binary("alertmanager"),
        f"--config.file={config}",
        f"--storage.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=info",
    ]
    with started("alertmanager", args, f"http://127.0.0.1:{port}", work) as service:
        yield service


@contextlib.contextmanager
def prometheus(
    directory: Path, metrics_target: str, rule_file: Path = ALERTS, alertmanager_address: Optional[str] = None
) -> Iterator[Service]:
    """Prometheus on a free port scraping ``metrics_target`` (host:port) every second, evaluating
    ``rule_file`` every second and sending alerts to ``alertmanager_address`` (host:port)."""
    work = directory / "prometheus"
    work.mkdir(parents=True)
    config = work / "prometheus.yml"
    config.write_text(
        render(
            PROMETHEUS_DIR / "prometheus.yml",
            SCRAPE_INTERVAL="1s",
            EVALUATION_INTERVAL="1s",
            RULE_FILE=str(rule_file),
            # Nothing listens on port 9 (discard): alerts go nowhere when no Alertmanager is given.
            ALERTMANAGER=alertmanager_address or "127.0.0.1:9",
            METRICS_TARGET=metrics_target,
        )
    )
    port = free_port()
    args = [
        binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
    ]
    with started("prometheus", args, f"http://127.0.0.1:{port}", work) as service:
        yield service


def query(prometheus_url: str, expr: str) -> tuple[int, dict]:
    """``/api/v1/query`` of ``expr``: the HTTP status and the decoded answer (a 400 with
    ``errorType: bad_data`` for an expression that does not parse)."""
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


# --- HTTP doubles -------------------------------------------------------------------------------


def exposition(samples: Mapping[str, tuple[str, Sequence[tuple[Mapping[str, str], float]]]]) -> str:
    """Prometheus text exposition (prometheus_client's, as the metrics service renders it) of
    ``{metric: ("gauge" | "counter", [(labels, value), ...])}``; a counter's name ends in ``_total``."""

    class Snapshot(Collector):
        def collect(self) -> Iterator[Metric]:
            for name, (kind, series) in samples.items():
                label_names = sorted({label for labels, _ in series for label in labels})
                family: Metric
                if kind == "counter":
                    family = CounterMetricFamily(name.removesuffix("_total"), name, labels=label_names)
                else:
                    family = GaugeMetricFamily(name, name, labels=label_names)
                for labels, value in series:
                    family.add_metric([labels.get(label, "") for label in label_names], value)
                yield family

    registry = CollectorRegistry()
    registry.register(Snapshot())
    return generate_latest(registry).decode()


class _Serving(ThreadingHTTPServer):
    daemon_threads = True


@dataclass
class MetricsEndpoint:
    """``GET /metrics`` answering whatever ``text`` holds now."""

    text: str = ""
    server: _Serving = field(init=False)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"


@contextlib.contextmanager
def metrics_endpoint(text: str) -> Iterator[MetricsEndpoint]:
    endpoint = MetricsEndpoint(text)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = endpoint.text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    endpoint.server = _Serving(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=endpoint.server.serve_forever, name="metrics-endpoint", daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()


@dataclass
class WebhookSink:
    """Records the JSON bodies posted to it (answering ``status``), in order."""

    status: int = 200
    received: queue.Queue = field(default_factory=queue.Queue)
    server: _Serving = field(init=False)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/webhook"

    def next(self, what: str, timeout_s: float = READY_TIMEOUT_S) -> Any:
        try:
            return self.received.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"{what}: nothing posted to {self.url} in {timeout_s:.0f} s") from None


@contextlib.contextmanager
def webhook_sink(status: int = 200) -> Iterator[WebhookSink]:
    sink = WebhookSink(status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or "0"))
            sink.received.put(json.loads(body))
            self.send_response(sink.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    sink.server = _Serving(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=sink.server.serve_forever, name="webhook-sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.server.shutdown()
        sink.server.server_close()
