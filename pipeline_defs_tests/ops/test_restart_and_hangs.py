"""The ops service restarted over a long history, and with a dependency that hangs: counters
start at zero and only count what happens after the start; a hung Dagster storage costs a
scrape its deadline, never more, and never more than one thread per part."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.settings import StorageSettings
from pipeline_defs.ops import names
from pipeline_defs.ops.collector import OpsCollector, Ttls, pending_by_asset
from pipeline_defs.ops.health import HealthChecker
from pipeline_defs.ops.kafka_lag import LagSnapshot
from pipeline_defs.ops.single_flight import NoAnswer, SingleFlight
from pipeline_defs.ops.tally import TallyReader
from pipeline_defs.ops.targets import Targets

ATTACHMENTS = "xact_attachments"
OK, TRANSIENT = (ATTACHMENTS, "files", "ok", ""), (ATTACHMENTS, "files", "failed", "transient")


def _report(instance: dg.DagsterInstance, stored: int, transient: int) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(ATTACHMENTS, metadata={"files_stored": stored, "failed_transient": transient})
    )


def _fail_run(instance: dg.DagsterInstance, job: str) -> None:
    instance.report_run_failed(instance.add_run(dg.DagsterRun(job_name=job, status=dg.DagsterRunStatus.STARTED)))


def test_a_restart_over_a_long_history_counts_only_what_follows() -> None:
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(300):  # more than a scrape's budget reads at once: it used to be summed back in over several scrapes
        _report(instance, 95, 5)
    _fail_run(instance, "xact_events_job")
    for restart in range(2):
        reader = TallyReader(instance, [ATTACHMENTS], ["xact_events_job"], page=50, budget_s=0.0)
        first = reader.refresh()
        assert first.items[OK] == first.items[TRANSIENT] == 0, f"restart {restart}: history summed again"
        assert first.runs_failed["xact_events_job"] == 0
        assert ATTACHMENTS in first.last_success  # the newest report still sets the gauges
        assert reader.refresh().items[TRANSIENT] == 0  # and later scrapes do not catch the history up either
        _report(instance, 10, 1)
        _fail_run(instance, "xact_events_job")
        after = reader.refresh()
        assert (after.items[OK], after.items[TRANSIENT], after.runs_failed["xact_events_job"]) == (10, 1, 1)


def test_pending_messages_leave_retry_topics_and_other_groups_out() -> None:
    snapshot = LagSnapshot(
        lag={
            ("p.xact_events", "events.raw", 0): 4,
            ("p.xact_events", "events.raw", 1): 2,
            ("p.xact_attachments", "downloads.pending.retry.5m", 0): 9,
            ("p.xact_attachments", "downloads.pending", 0): 1,
            ("other.xact_events", "events.raw", 0): 100,
            ("p.not_an_asset", "events.raw", 0): 100,
        }
    )
    pending = pending_by_asset(snapshot, "p.", {"downloads.pending.retry.5m"}, {"xact_events", "xact_attachments", "cdc_x"})
    assert pending == {"xact_events": 6, "xact_attachments": 1, "cdc_x": 0}


def test_a_hung_call_holds_one_thread_and_hands_its_late_answer() -> None:
    release = threading.Event()
    calls: list[int] = []

    def hung() -> str:
        calls.append(1)
        release.wait(60)
        return "late"

    flight: SingleFlight[str] = SingleFlight("dagster")
    for _ in range(5):
        with pytest.raises(NoAnswer, match="dagster: no answer yet"):
            flight.run(hung, timeout_s=0.05)
    assert len(calls) == 1
    release.set()
    assert flight.result(timeout_s=30) == "late"
    assert flight.run(lambda: "fresh", timeout_s=30) == "fresh"


class _HungStorage:
    """A Dagster instance whose storage stopped answering (a PostgreSQL behind a dropped route)."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            self.release.wait(120)
            raise ConnectionError("storage went away")

        return call


def test_a_hung_storage_costs_a_scrape_its_deadline_and_one_thread_per_part(tmp_path: Path) -> None:
    release = threading.Event()
    targets = Targets(
        clusters=[],
        group_prefix="p.",
        lake=DeltaLakeResource(storage=StorageSettings(lake_root=str(tmp_path / "tables"))),
        dlq_views=[],
        assets=[ATTACHMENTS],
        jobs=["xact_events_job"],
    )
    checker = HealthChecker({"fine": lambda: None}, timeout_s=0.5)
    collector = OpsCollector(targets, _HungStorage(release), checker, Ttls(deadline_s=0.5))  # type: ignore[arg-type]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    threads_before = threading.active_count()
    try:
        for _ in range(4):
            started = time.monotonic()
            text = generate_latest(registry).decode()
            assert time.monotonic() - started < 10, "a scrape waited on the hung storage past its deadline"
            up = {
                s.labels["source"]: s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == names.SOURCE_UP
            }
            assert up == {"kafka": 1, "dlq": 1, "runs": 0, "event_log": 0, "health": 1}
        assert threading.active_count() - threads_before <= 2  # the two hung parts, each one call

    finally:
        release.set()
        collector.close()


def test_a_hung_probe_holds_one_thread_however_often_readiness_is_asked() -> None:
    release = threading.Event()

    def hung() -> None:
        release.wait(120)

    checker = HealthChecker({"dagster": hung, "kafka": lambda: None}, timeout_s=0.2)
    threads_before = threading.active_count()
    try:
        for _ in range(10):  # the pool of old ran out of workers here and reported every component down
            results = {r.component: r for r in checker.check()}
            assert results["kafka"].up and not results["dagster"].up
            assert results["dagster"].error == "no answer within 0.2 s"
        assert threading.active_count() - threads_before <= 1
    finally:
        release.set()
