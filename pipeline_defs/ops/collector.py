"""The Prometheus collector: everything is read when Prometheus scrapes, each part behind a
time-to-live cache so frequent scrapes stay cheap (Kafka offsets ``kafka_ttl_s``, DLQ views and
queued runs ``slow_ttl_s``, health ``health_ttl_s``; the event log is read incrementally on every
scrape). The parts are read side by side, each in its own thread, and a scrape waits for them
at most ``deadline_s``. A part that cannot be read, or hangs (its next scrapes wait for the same
call, never start another), is left out of that scrape and reported by
``pipeline_ops_source_up{source}`` = 0; the others are still exposed."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Optional, TypeVar

import dagster as dg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline_defs.lib.dlq.health import health as dlq_health
from pipeline_defs.ops import names
from pipeline_defs.ops.health import HealthChecker, ProbeResult, describe_error
from pipeline_defs.ops.kafka_lag import LagReader, LagSnapshot
from pipeline_defs.ops.single_flight import SingleFlight
from pipeline_defs.ops.tally import Tally, TallyReader, newer_than
from pipeline_defs.ops.targets import Targets

_LOG = logging.getLogger(__name__)
T = TypeVar("T")


class Cached(Generic[T]):
    """``load()``'s value, loaded again once older than ``ttl_s``; a failed load is retried at
    the next scrape."""

    def __init__(self, load: Callable[[], T], ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.load, self.ttl_s, self.clock = load, ttl_s, clock
        self._value: Optional[T] = None
        self._at = float("-inf")

    def get(self) -> T:
        if self._value is None or self.clock() - self._at >= self.ttl_s:
            self._value = self.load()
            self._at = self.clock()
        return self._value


@dataclass(frozen=True)
class Ttls:
    kafka_s: float = 5.0
    slow_s: float = 30.0
    health_s: float = 10.0
    deadline_s: float = 5.0  # a scrape's longest wait for its parts (Prometheus' scrape_timeout is 10 s)
    stale_after_s: float = 3600.0  # reported gauges (latency, replication lag, breakers) older than this are dropped


def queued_runs(instance: dg.DagsterInstance, jobs: list[str]) -> dict[str, int]:
    """Queued runs per job (few: one query)."""
    queued = dict.fromkeys(jobs, 0)
    for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])):
        queued[record.dagster_run.job_name] = queued.get(record.dagster_run.job_name, 0) + 1
    return queued


def pending_by_asset(snapshot: LagSnapshot, group_prefix: str, delayed: set[str], assets: set[str]) -> dict[str, int]:
    """Messages due for each asset: its consumer group's (``<prefix><asset>``) lag, retry
    topics left out (their records wait out a delay before anyone should take them)."""
    pending = dict.fromkeys(sorted(assets), 0)
    for (group, topic, _), value in snapshot.lag.items():
        asset = group.removeprefix(group_prefix)
        if group.startswith(group_prefix) and asset in assets and topic not in delayed:
            pending[asset] += value
    return pending


def _timed(part: Callable[[], Iterator[Metric]]) -> tuple[list[Metric], float]:
    started = time.monotonic()
    metrics = list(part())
    return metrics, time.monotonic() - started


class OpsCollector(Collector):
    def __init__(
        self,
        targets: Targets,
        instance: dg.DagsterInstance,
        health: HealthChecker,
        ttls: Ttls = Ttls(),
        dlq_window: timedelta = timedelta(hours=1),
    ) -> None:
        self.targets = targets
        self.instance = instance
        self.health = health
        self.ttls = ttls
        self._lock = threading.Lock()
        self._readers = [LagReader(c, targets.group_prefix) for c in targets.clusters]
        self._lag = [Cached(reader.read, ttls.kafka_s) for reader in self._readers]
        self._dlq = Cached(lambda: {s.name: dlq_health(targets.lake, s, dlq_window) for s in targets.dlq_views}, ttls.slow_s)
        self._runs = Cached(lambda: queued_runs(instance, targets.jobs), ttls.slow_s)
        self._health = Cached(health.check, ttls.health_s)
        self._tally = TallyReader(instance, targets.assets, targets.jobs)
        self._parts: dict[str, Callable[[], Iterator[Metric]]] = {
            "kafka": self._kafka,
            "dlq": self._dlqs,
            "runs": self._run_metrics,
            "event_log": self._events,
            "health": self._healths,
        }
        self._flights: dict[str, SingleFlight[tuple[list[Metric], float]]] = {name: SingleFlight(name) for name in self._parts}

    def describe(self) -> list[Metric]:
        return []  # collected on scrape only, never at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            started = time.monotonic()
            sources = GaugeMetricFamily(
                names.SOURCE_UP, "Could this part of the scrape be read (1) or not (0)", labels=["source"]
            )
            part_seconds = GaugeMetricFamily(names.PART_SECONDS, "Seconds this scrape spent on each part", labels=["source"])
            for source, part in self._parts.items():
                self._flights[source].start(functools.partial(_timed, part))
            for source in self._parts:
                try:
                    metrics, seconds = self._flights[source].result(started + self.ttls.deadline_s - time.monotonic())
                except Exception as exc:  # noqa: BLE001 - one part down must not hide the others
                    _LOG.warning(f"ops scrape: {source} unavailable: {describe_error(exc)}")
                    metrics, seconds, up = [], time.monotonic() - started, 0
                else:
                    up = 1
                sources.add_metric([source], up)
                part_seconds.add_metric([source], seconds)
                yield from metrics
            yield sources
            yield part_seconds
            duration = GaugeMetricFamily(names.SCRAPE_DURATION_SECONDS, "Seconds this scrape took to collect every other metric")
            duration.add_metric([], time.monotonic() - started)
            yield duration

    def _kafka(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            names.KAFKA_CONSUMER_LAG,
            "End offset minus committed offset of a pipeline consumer group (messages)",
            labels=["consumer_group", "topic", "partition"],
        )
        ends = GaugeMetricFamily(names.KAFKA_END_OFFSET, "Log end offset", labels=["topic", "partition"])
        pending = GaugeMetricFamily(
            names.ASSET_PENDING_MESSAGES,
            "Messages due for the asset: its consumer group's lag, retry topics left out",
            labels=["asset"],
        )
        totals: Counter[str] = Counter()
        for cluster, cached in zip(self.targets.clusters, self._lag):
            snapshot: LagSnapshot = cached.get()
            for (group, topic, partition), value in sorted(snapshot.lag.items()):
                lag.add_metric([group, topic, str(partition)], value)
            for (topic, partition), offset in sorted(snapshot.end_offsets.items()):
                ends.add_metric([topic, str(partition)], offset)
            totals.update(pending_by_asset(snapshot, self.targets.group_prefix, cluster.delayed, set(self.targets.assets)))
        for asset, value in sorted(totals.items()):
            pending.add_metric([asset], value)
        return iter([lag, ends, pending])

    def _dlqs(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(names.DLQ_DEPTH, "Open (waiting) entries of a DLQ view", labels=["dlq"])
        age = GaugeMetricFamily(names.DLQ_OLDEST_ENTRY_AGE_SECONDS, "Age of the oldest open entry", labels=["dlq"])
        for name, state in sorted(self._dlq.get().items()):
            depth.add_metric([name], state.waiting)
            age.add_metric([name], state.oldest_age_s or 0.0)
        return iter([depth, age])

    def _run_metrics(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily(names.RUNS_QUEUED, "Runs queued per job", labels=["job"])
        for job, n in sorted(self._runs.get().items()):
            queued.add_metric([job], n)
        return iter([queued])

    def _events(self) -> Iterator[Metric]:
        tally: Tally = self._tally.refresh()
        now = time.time()
        fresh_since = now - self.ttls.stale_after_s
        items = CounterMetricFamily(
            names.ITEMS_TOTAL,
            "Items processed by asset, kind, outcome and category",
            labels=["asset", "kind", "outcome", "category"],
        )
        for key, n in sorted(tally.items.items()):
            items.add_metric(list(key), n)
        since = GaugeMetricFamily(names.ASSET_SECONDS_SINCE_SUCCESS, "Seconds since the last materialization", labels=["asset"])
        for asset, at in sorted(tally.last_success.items()):
            since.add_metric([asset], max(now - at, 0.0))
        latency = GaugeMetricFamily(
            names.EVENT_LATENCY_P95_SECONDS, "p95 Kafka-timestamp-to-commit latency of the last report", labels=["asset"]
        )
        for asset, value in sorted(newer_than(tally.latency_p95, fresh_since).items()):
            latency.add_metric([asset], value)
        replication = GaugeMetricFamily(
            names.CDC_REPLICATION_LAG_SECONDS, "Now minus the newest writetime applied, at the last run", labels=["table"]
        )
        for table, value in sorted(newer_than(tally.replication_lag, fresh_since).items()):
            replication.add_metric([table], value)
        breakers = GaugeMetricFamily(
            names.CIRCUIT_BREAKER_OPEN, "1 when the last report left the target's breaker open or half-open", labels=["target"]
        )
        for target, value in sorted(tally.breaker_open(since=fresh_since).items()):
            breakers.add_metric([target], value)
        writes = CounterMetricFamily(names.WRITE_FAILURES_TOTAL, "Steps failed or retried on a sink write", labels=["sink"])
        for sink, n in sorted(tally.write_failures.items()):
            writes.add_metric([sink], n)
        failed = CounterMetricFamily(names.RUNS_FAILED_TOTAL, "Runs failed per job since the service started", labels=["job"])
        for job, n in sorted(tally.runs_failed.items()):
            failed.add_metric([job], n)
        return iter([items, since, latency, replication, breakers, writes, failed])

    def _healths(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(names.HEALTH_UP, "Component answered its readiness probe", labels=["component"])
        latency = GaugeMetricFamily(names.HEALTH_LATENCY_SECONDS, "Latency of the readiness probe", labels=["component"])
        results: list[ProbeResult] = self._health.get()
        for result in results:
            up.add_metric([result.component], int(result.up))
            latency.add_metric([result.component], result.latency_s)
        return iter([up, latency])

    def close(self) -> None:
        self.health.close()
        for reader in self._readers:
            reader.close()


def describe_targets(targets: Targets) -> dict[str, Any]:
    """What the service watches, for its start-up log line (no credentials)."""
    return {
        "clusters": {c.name: [c.kafka.connection.bootstrap_servers, len(c.topics)] for c in targets.clusters},
        "dlq_views": len(targets.dlq_views),
        "assets": len(targets.assets),
        "jobs": len(targets.jobs),
    }
