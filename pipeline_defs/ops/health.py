"""Readiness probes of the systems the pipeline needs: Kafka (the pipeline's cluster, and the
source cluster when it is another), storage (the Delta lake root), the Dagster instance (its run
storage), and the ClaimX API (any HTTP answer below 500 means it is there). Each probe runs in
its own thread with a deadline and reports up/down, its latency and the error; an error names
the exception and its message, with whatever looks like a credential redacted (a client library
may quote its config or connection string)."""

from __future__ import annotations

import functools
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import dagster as dg
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.ops.single_flight import NoAnswer, SingleFlight

Probe = Callable[[], None]  # raises when the component is not usable


@dataclass(frozen=True)
class ProbeResult:
    component: str
    up: bool
    latency_s: float
    error: Optional[str] = None

    def as_json(self) -> dict[str, object]:
        return {"up": self.up, "latency_s": round(self.latency_s, 4), "error": self.error}


def kafka_probe(kafka: KafkaResource, timeout_s: float, topic: Optional[str] = None) -> Probe:
    """Broker metadata (of ``topic`` only, when given: a cluster's full metadata can be large)."""

    def probe() -> None:
        metadata = kafka.admin().list_topics(topic=topic, timeout=timeout_s)
        if not metadata.brokers:
            raise RuntimeError(f"{kafka.connection.bootstrap_servers}: no broker in the metadata")

    return probe


def storage_probe(lake: DeltaLakeResource, table: str, timeout_s: float) -> Probe:
    """Opens a table's log; "no such table" still proves the storage answered."""

    def probe() -> None:
        if not lake.is_remote:
            root = Path(lake.table_uri(table)).parent
            if not root.parent.exists():
                raise FileNotFoundError(f"lake root's parent {root.parent} does not exist")
            return
        options = {**lake.storage_options(), "timeout": f"{max(int(timeout_s), 1)}s", "max_retries": "0"}
        try:
            DeltaTable(lake.table_uri(table), storage_options=options)
        except TableNotFoundError:
            return

    return probe


def dagster_probe(instance: dg.DagsterInstance) -> Probe:
    def probe() -> None:
        instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))

    return probe


def http_probe(url: str, timeout_s: float) -> Probe:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url[:100]}")

    def probe() -> None:
        request = urllib.request.Request(url, method="GET")  # noqa: S310 - http(s) only, checked above
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        if status >= 500:
            raise RuntimeError(f"HTTP {status}")

    return probe


# A quoted value ends at its closing quote only where a value would end (else it is one unquoted run).
_QUOTED = r"""(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')(?=[\s,;&)}\]]|$)"""
_CREDENTIAL_KEY = (
    r"[\w.-]*(?:passw(?:or)?d|pwd|secret|token|api[_-]?key|accountkey|sharedaccess(?:key|signature)|sig|authorization)"
)
_REDACTIONS = (
    # Teams incoming webhooks, Logic Apps and Power Automate workflows: path and query are the credential
    (
        re.compile(r"(?i)(https?://[\w.-]*(?:webhook\.office\.com|logic\.azure\.com|api\.powerplatform\.com)(?::\d+)?)[/?]\S*"),
        r"\1/***",
    ),
    # Bearer <token>, first: the key rule below would take "Bearer" itself as the value of Authorization:
    (re.compile(r"(?i)\b(bearer\s+)\S+"), r"\1***"),
    # key=value, key: value, 'key': 'value', "key": "value" (dict reprs, JSON, YAML, query and connection strings)
    (
        re.compile(rf"(?i)((?<![\w.-]){_CREDENTIAL_KEY}['\"]?\s*[:=]\s*(?:(?:bearer|basic)\s+)?)(?:{_QUOTED}|[^\s;&]+)"),
        r"\1***",
    ),
    # user:password@ in a URL up to the last '@' (a password may hold '@' or '/'), or any user@
    (re.compile(r"://(?:[^\s/:@]*:\S*|[^\s/]*)@"), "://***@"),
)


def redact(text: str) -> str:
    """``text`` without what looks like a credential: an error may quote a connection string, a
    client's config or a webhook URL. Meant for short texts (error messages)."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def describe_error(exc: BaseException) -> str:
    """Redacted before it is cut: a cut could split a credential from the text that marks it."""
    return redact(f"{type(exc).__name__}: {str(exc)[:5000]}")[:300]


class HealthChecker:
    """Runs every probe side by side, each in a ``SingleFlight``: a probe that hangs is
    reported down after ``timeout_s``, and later checks wait for that same call instead of
    starting another, so a hung component holds one thread, not one per check."""

    def __init__(self, probes: Mapping[str, Probe], timeout_s: float = 3.0) -> None:
        self.probes = dict(probes)
        self.timeout_s = timeout_s
        self._flights: dict[str, SingleFlight[tuple[float, Optional[str]]]] = {name: SingleFlight(name) for name in self.probes}
        self._lock = threading.Lock()  # /health/ready and /metrics may ask at once

    def check(self) -> list[ProbeResult]:
        with self._lock:
            started = time.monotonic()
            for name, probe in self.probes.items():
                self._flights[name].start(functools.partial(self._timed, probe))
            results = []
            for name, flight in self._flights.items():
                try:
                    latency, error = flight.result(started + self.timeout_s - time.monotonic())
                except NoAnswer:
                    latency, error = self.timeout_s, f"no answer within {self.timeout_s:g} s"
                results.append(ProbeResult(name, error is None, latency, error))
            return results

    @staticmethod
    def _timed(probe: Probe) -> tuple[float, Optional[str]]:
        started = time.monotonic()
        try:
            probe()
        except Exception as exc:  # noqa: BLE001 - whatever fails, the component is down; say why
            return time.monotonic() - started, describe_error(exc)
        return time.monotonic() - started, None

    def close(self) -> None:
        """Nothing to stop: a probe still running is a daemon thread that ends with its call."""
