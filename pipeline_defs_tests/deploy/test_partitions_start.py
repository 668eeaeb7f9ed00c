"""The daily partitions start at the deployment's first day (or ``partitions_start``), so a new
installation shows no years of "missing" days, and every process of a deployment agrees on it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from pipeline_defs.definitions import defs as build_defs
from pipeline_defs.domains import PipelineSettings
from pipeline_defs.lib.policies import PARTITIONS_START_KEY, first_load_day, ingestion_days, partitions_start

DAY = date(2026, 11, 30)


@pytest.fixture
def no_dagster_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("PIPELINE_PARTITIONS_START", raising=False)
    monkeypatch.setenv("PIPELINE_CONFIG_FILE", "/nonexistent/config.yaml")


def test_a_configured_start_wins(no_dagster_home: None, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_PARTITIONS_START", DAY.isoformat())
    assert partitions_start(PipelineSettings(), today=DAY + timedelta(days=9)) == DAY


def test_without_an_instance_the_partitions_start_today(no_dagster_home: None):
    assert partitions_start(PipelineSettings(), today=DAY) == DAY


def test_the_first_load_day_is_kept_in_the_instance(no_dagster_home: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # DAGSTER_HOME without a dagster.yaml: the default SQLite instance, as storage-backed as PostgreSQL.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert partitions_start(PipelineSettings(), today=DAY) == DAY
    # A restart, a new image, another machine on the same instance a week later: still that day.
    assert partitions_start(PipelineSettings(), today=DAY + timedelta(days=7)) == DAY
    with dg.DagsterInstance.get() as instance:
        assert instance.run_storage.get_cursor_values({PARTITIONS_START_KEY}) == {PARTITIONS_START_KEY: DAY.isoformat()}
        assert first_load_day(instance, DAY + timedelta(days=30)) == DAY


def test_an_eventhouse_poller_starting_in_the_past_pulls_the_start_back(no_dagster_home: None, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_EVENTHOUSE__POLL__START_FROM", "2026-11-02T06:00:00")
    assert partitions_start(PipelineSettings(), today=DAY) == date(2026, 11, 2)


def test_the_code_location_moves_every_daily_asset_and_job_onto_the_start(no_dagster_home: None, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_PARTITIONS_START", DAY.isoformat())
    defs = build_defs()
    dg.Definitions.validate_loadable(defs)
    partitioned = [spec for spec in defs.resolve_all_asset_specs() if spec.partitions_def is not None]
    assert {spec.key.to_user_string() for spec in partitioned} >= {"xact_events", "xact_attachments", "claimx_events"}
    for spec in partitioned:
        assert spec.partitions_def != ingestion_days, spec.key
        assert isinstance(spec.partitions_def, dg.DailyPartitionsDefinition)
        assert spec.partitions_def.start == datetime(2026, 11, 30, tzinfo=UTC), spec.key
    job_days = defs.resolve_job_def("xact_events_job").partitions_def
    assert job_days is not None
    keys = job_days.get_partition_keys()
    # From the start to today's partition (end_offset=1), nothing older: "all missing" is real work.
    assert keys[0] == DAY.isoformat()
    assert keys[-1] == datetime.now(UTC).date().isoformat()
