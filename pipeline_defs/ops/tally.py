"""What the assets report, read incrementally from the Dagster instance's event log: each
scrape asks only for materializations (and step and run failures) stored after the last one it
saw. Every materialization of a Kafka-fed asset (a batch run, or a streaming run's interval)
reports its own counts, so they add up.

The counters count from the service's start, as Prometheus counters do (``rate`` and
``increase`` take a restart as a reset): the first read takes each asset's newest report for
its gauges only, and the history before it is never summed again. Summing a long history
back in over a few scrapes would look like a burst of failures.

* items: per asset, kind, outcome and category (``items_of``), every category of an asset
  from zero, so the first failures count as an increase;
* seconds since success: the newest materialization's time;
* latency p95 (streaming runs' ``latency_p95_s``), CDC ``replication_lag_s`` and circuit
  breakers (``circuit_transitions``, "host: closed -> open", or "closed -> open" for the ClaimX
  API: the state the newest report left each target in): the newest report's, while it is
  younger than ``stale_after_s`` (an old report says nothing about now);
* write failures: failed or retried steps whose error is Delta's or PostgreSQL's;
* failed runs per job."""

from __future__ import annotations

import re
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import dagster as dg

ItemKey = tuple[str, str, str, str]  # asset, kind, outcome, category
FAILED_COUNTERS = {
    "failed_transient": "transient",
    "failed_permanent": "permanent",
    "failed_auth": "auth",
    "circuit_open": "circuit_open",
    "failed_unprocessable": "unprocessable",
}
CLAIMX_API_TARGET = "claimx-api"
_TRANSITION = re.compile(r"^(?:(?P<key>.+): )?(?P<from>[a-z_]+) -> (?P<to>[a-z_]+)$")
DELTA_ERRORS = re.compile(r"Delta|CommitFailed|SchemaMismatch|TableNotFound")
POSTGRES_ERRORS = re.compile(
    r"Postgres|^Operational|^Serialization|^Deadlock|^Integrity|^DataError$|^InternalError$|^RecordFailing$|Psycopg"
)


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _int(metadata: Mapping[str, Any], key: str) -> int:
    value = _value(metadata, key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def items_of(asset: str, metadata: Mapping[str, Any]) -> Counter[ItemKey]:
    """One materialization's items. Attachments: files stored or failed by category;
    enrichment: events enriched or failed; event logs and DLQ views: rows written, records
    dead-lettered by category; entity tables and CDC tables: rows changed (CDC: invalid and
    dead-lettered records failed)."""
    items: Counter[ItemKey] = Counter()
    if "files_stored" in metadata or "events_enriched" in metadata:
        kind, ok = ("files", "files_stored") if "files_stored" in metadata else ("enrichments", "events_enriched")
        items[(asset, kind, "ok", "")] += _int(metadata, ok)
        for key, category in FAILED_COUNTERS.items():
            items[(asset, kind, "failed", category)] += _int(metadata, key)
    elif "rows_written" in metadata:
        kind = "dead_letters" if asset.startswith("dlq_") else "events"
        items[(asset, kind, "ok", "")] += _int(metadata, "rows_written")
    elif "rows_inserted" in metadata:
        items[(asset, "rows", "ok", "")] += _int(metadata, "rows_inserted") + _int(metadata, "rows_updated")
    elif "events_read" in metadata and "inserted" in metadata:
        items[(asset, "rows", "ok", "")] += sum(_int(metadata, k) for k in ("inserted", "updated", "deleted"))
        items[(asset, "rows", "failed", "invalid")] += _int(metadata, "invalid")
        items[(asset, "rows", "failed", "unprocessable")] += _int(metadata, "dead_lettered_after_failures")
    rejected = _value(metadata, "rejected_by_category")
    if isinstance(rejected, Mapping):
        kind = next((k for (_, k, _, _) in items), "events")
        for category, count in rejected.items():
            if isinstance(count, int):
                items[(asset, kind, "failed", str(category))] += count
    return items


def breaker_states(transitions: Any) -> dict[str, str]:
    """The last state each target's breaker moved to, from a report's transitions."""
    states: dict[str, str] = {}
    for text in transitions if isinstance(transitions, list) else []:
        match = _TRANSITION.match(str(text))
        if match:
            states[match["key"] or CLAIMX_API_TARGET] = match["to"]
    return states


def error_sink(error: Any) -> Optional[str]:
    """``delta`` or ``postgres`` when a step's error (or one of its causes) is a write to that
    sink failing, else ``None``."""
    seen = 0
    while error is not None and seen < 10:
        name = str(getattr(error, "cls_name", "") or "")
        if DELTA_ERRORS.search(name):
            return "delta"
        if POSTGRES_ERRORS.search(name):
            return "postgres"
        error, seen = getattr(error, "cause", None) or getattr(error, "context", None), seen + 1
    return None


Reported = tuple[float, float]  # value, time of the report


@dataclass
class Tally:
    items: Counter[ItemKey] = field(default_factory=Counter)
    last_success: dict[str, float] = field(default_factory=dict)
    latency_p95: dict[str, Reported] = field(default_factory=dict)
    replication_lag: dict[str, Reported] = field(default_factory=dict)
    breakers: dict[str, tuple[dict[str, str], float]] = field(default_factory=dict)  # asset -> target states, time
    write_failures: Counter[str] = field(default_factory=lambda: Counter({"delta": 0, "postgres": 0}))
    runs_failed: Counter[str] = field(default_factory=Counter)  # job -> runs failed

    def add_materialization(self, asset: str, timestamp: float, metadata: Mapping[str, Any], count: bool = True) -> None:
        """One report; ``count=False`` takes its gauges and its item keys at zero (the newest
        report before the service started)."""
        items = items_of(asset, metadata)
        self.items.update(items if count else Counter(dict.fromkeys(items, 0)))
        self.last_success[asset] = max(self.last_success.get(asset, 0.0), timestamp)
        p95 = _value(metadata, "latency_p95_s")
        if isinstance(p95, (int, float)):
            self.latency_p95[asset] = (float(p95), timestamp)
        lag = _value(metadata, "replication_lag_s")
        if isinstance(lag, (int, float)) and asset.startswith("cdc_"):
            self.replication_lag[asset.removeprefix("cdc_")] = (float(lag), timestamp)
        if "circuit_transitions" in metadata:
            # a breaker lives as long as its run (or batch): a report without a target's
            # transitions means a fresh, closed breaker
            self.breakers[asset] = (breaker_states(_value(metadata, "circuit_transitions")), timestamp)

    def breaker_open(self, since: float = 0.0) -> dict[str, int]:
        """Per target, 1 when a report newer than ``since`` left its breaker open or half-open."""
        open_: dict[str, int] = {}
        for states, at in self.breakers.values():
            for target, state in states.items() if at >= since else ():
                open_[target] = max(open_.get(target, 0), int(state != "closed"))
        return open_


def newer_than(reports: Mapping[str, Reported], since: float) -> dict[str, float]:
    return {key: value for key, (value, at) in reports.items() if at >= since}


class TallyReader:
    """Reads new events from ``instance`` into a ``Tally``: per asset, the materializations
    stored after the last one seen (``fetch_materializations`` from a cursor), at most
    ``budget_s`` per call (a burst of reports is caught up over a few scrapes); then the step
    failures and retries, and the failed runs, stored since the last seen."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        assets: Iterable[str],
        jobs: Iterable[str] = (),
        page: int = 1000,
        budget_s: float = 0.5,
    ):
        self.instance = instance
        self.assets = list(assets)
        self.page = page
        self.budget_s = budget_s
        self.tally = Tally(runs_failed=Counter(dict.fromkeys(jobs, 0)))
        self._cursors: dict[str, Optional[str]] = {}
        self._after: dict[dg.DagsterEventType, Optional[int]] = {}
        self._runs_cursor: Optional[str] = None
        self._started = False

    def refresh(self) -> Tally:
        if not self._started:
            self._start()
        deadline = time.monotonic() + self.budget_s
        for asset in self.assets:
            while True:
                result = self.instance.fetch_materializations(
                    dg.AssetKey.from_user_string(asset), limit=self.page, cursor=self._cursors[asset], ascending=True
                )
                for record in result.records:
                    materialization = record.asset_materialization
                    if materialization is not None:
                        self.tally.add_materialization(asset, record.timestamp, materialization.metadata)
                if result.records:
                    self._cursors[asset] = result.cursor
                if not result.has_more or time.monotonic() >= deadline:
                    break
        for event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY):
            for record in self._step_events(event_type, self.page, ascending=True):
                event = record.event_log_entry.dagster_event
                data = getattr(event, "event_specific_data", None) if event is not None else None
                sink = error_sink(getattr(data, "error", None))
                if sink is not None:
                    self.tally.write_failures[sink] += 1
                self._after[event_type] = record.storage_id
        self._read_run_failures()
        return self.tally

    def _start(self) -> None:
        """Where counting starts: after each asset's newest report (taken for its gauges), the
        newest step failure and retry, and the newest run failure."""
        for asset in self.assets:
            result = self.instance.fetch_materializations(dg.AssetKey.from_user_string(asset), limit=1, ascending=False)
            self._cursors[asset] = result.cursor if result.records else None
            for record in result.records:
                if record.asset_materialization is not None:
                    self.tally.add_materialization(asset, record.timestamp, record.asset_materialization.metadata, count=False)
        for event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY):
            newest = self._step_events(event_type, 1, ascending=False)
            self._after[event_type] = newest[0].storage_id if newest else None
        runs = self.instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=1, ascending=False)
        self._runs_cursor = runs.cursor if runs.records else None
        self._started = True

    def _step_events(self, event_type: dg.DagsterEventType, limit: int, ascending: bool) -> Sequence[Any]:
        # Dagster 1.x has no cursor-based replacement for step events across runs; this one is
        # public, deprecated for 2.0.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self.instance.get_event_records(
                dg.EventRecordsFilter(event_type=event_type, after_cursor=self._after.get(event_type) if ascending else None),
                limit=limit,
                ascending=ascending,
            )

    def _read_run_failures(self) -> None:
        while True:
            result = self.instance.fetch_run_status_changes(
                dg.DagsterEventType.RUN_FAILURE, limit=self.page, cursor=self._runs_cursor, ascending=True
            )
            for record in result.records:
                self.tally.runs_failed[record.event_log_entry.job_name or ""] += 1
            if result.records:
                self._runs_cursor = result.cursor
            if not result.has_more:
                return
