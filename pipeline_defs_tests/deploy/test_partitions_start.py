"""The daily partitions start at the deployment's first day (or ``partitions_start``), so a new
installation shows no years of "missing" days, and every process of a deployment agrees on it."""

from __future__ import annotations

import logging
import uuid
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


def test_a_configured_start_after_today_fails_the_load_naming_the_setting(no_dagster_home: None, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_PARTITIONS_START", (DAY + timedelta(days=1)).isoformat())
    with pytest.raises(
        ValueError, match=r"partitions_start \(PIPELINE_PARTITIONS_START\) is 2026-12-01, after today \(2026-11-30"
    ):
        partitions_start(PipelineSettings(), today=DAY)
    # Today itself is fine: its partition exists (end_offset=1).
    assert partitions_start(PipelineSettings(), today=DAY + timedelta(days=1)) == DAY + timedelta(days=1)
    # The code location refuses it when it loads, rather than serve partitions without today's.
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    monkeypatch.setenv("PIPELINE_PARTITIONS_START", tomorrow.isoformat())
    with pytest.raises(ValueError, match=f"PIPELINE_PARTITIONS_START\\) is {tomorrow}"):
        build_defs()


@pytest.mark.parametrize("stored", ["05/12/2026", "", "2026-12-01"])
def test_a_stored_day_that_is_garbage_or_after_today_is_logged_and_replaced(stored: str, caplog: pytest.LogCaptureFixture):
    instance = dg.DagsterInstance.ephemeral()
    instance.run_storage.set_cursor_values({PARTITIONS_START_KEY: stored})
    with caplog.at_level(logging.WARNING, logger="pipeline_defs.lib.policies"):
        assert first_load_day(instance, DAY) == DAY
    assert f"{PARTITIONS_START_KEY}={stored!r}" in caplog.text
    assert instance.run_storage.get_cursor_values({PARTITIONS_START_KEY}) == {PARTITIONS_START_KEY: DAY.isoformat()}


def test_an_upgraded_instance_starts_at_its_earliest_run(caplog: pytest.LogCaptureFixture):
    # An installation that ran before this code kept no day: its history stays in view.
    instance = dg.DagsterInstance.ephemeral()
    for created in (datetime(2026, 3, 14, 23, 30, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)):
        instance.run_storage.add_historical_run(dg.DagsterRun(job_name="xact_events_job", run_id=str(uuid.uuid4())), created)
    assert first_load_day(instance, DAY) == date(2026, 3, 14)
    assert first_load_day(instance, DAY + timedelta(days=7)) == date(2026, 3, 14)
    assert instance.run_storage.get_cursor_values({PARTITIONS_START_KEY}) == {PARTITIONS_START_KEY: "2026-03-14"}
    assert not caplog.records


def test_a_run_today_starts_the_partitions_today():
    # A real run, timestamped by the run storage itself.
    instance = dg.DagsterInstance.ephemeral()

    @dg.asset
    def one() -> int:
        return 1

    assert dg.materialize([one], instance=instance).success
    today = datetime.now(UTC).date()
    assert first_load_day(instance, today) == today


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
