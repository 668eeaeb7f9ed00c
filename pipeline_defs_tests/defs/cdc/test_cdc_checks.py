"""The checks a replication run reports, judged from its report alone (no services)."""

import time

import dagster as dg

from pipeline_defs.defs.cdc.assets import report_checks
from pipeline_defs.defs.cdc.settings import CdcSettings
from pipeline_defs.lib.cdc.replicate import ReplicationReport

KEY = dg.AssetKey("cdc_claims__policies")


def checks(report: ReplicationReport) -> dict[str, dg.AssetCheckResult]:
    return {c.check_name: c for c in report_checks(report, CdcSettings(max_lag_s=300), KEY) if c.check_name}


def test_replication_lag_warns_past_its_threshold_and_not_without_events() -> None:
    now_us = time.time_ns() // 1000
    fresh = checks(ReplicationReport(read=1, newest_writetime_us=now_us - 10_000_000))["replication_lag_below_threshold"]
    late = checks(ReplicationReport(read=1, newest_writetime_us=now_us - 900_000_000))["replication_lag_below_threshold"]
    idle = checks(ReplicationReport())["replication_lag_below_threshold"]
    assert fresh.passed and not late.passed and idle.passed
    assert late.severity == dg.AssetCheckSeverity.WARN and float(late.metadata["lag_s"].value) >= 900  # type: ignore[arg-type]


def test_a_few_dirty_records_warn_but_a_changed_column_type_blocks() -> None:
    dirty = checks(ReplicationReport(read=100, invalid=6, invalid_columns={"premium": 6}))
    assert not dirty["invalid_share_below_threshold"].passed and dirty["declared_schema_holds"].passed
    broken = checks(ReplicationReport(read=100, invalid=80, invalid_columns={"premium": 80}))
    assert not broken["declared_schema_holds"].passed and "premium" in str(
        broken["declared_schema_holds"].metadata["broken_columns"].value
    )
