"""The alert rules (deploy/prometheus/alerts.yml): their shape, their unit tests under Debian's
``promtool test rules``, and the config templates beside them under ``promtool``/``amtool``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # stubs may or may not be installed

from pipeline_defs_tests.support.prometheus import ALERTS, ALERTS_TEST, PROMETHEUS_DIR, binary, render
from pipeline_defs_tests.support.stack import ROOT

SEVERITIES = {"critical", "warning", "info"}
# The runbooks the alerts point at (docs/runbooks/, written beside these rules).
RUNBOOKS = {
    "consumer-lag.md",
    "circuit-breaker.md",
    "poison-range.md",
    "storage-down.md",
    "deployment.md",
    "scaling.md",
    "credential-rotation.md",
    "dlq.md",
}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, check=False, cwd=PROMETHEUS_DIR)


def test_every_alert_has_severity_summary_description_and_a_runbook() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)), "alert names repeat"
    for rule in rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        runbook = annotations["runbook_url"]
        assert runbook.startswith("docs/runbooks/") and runbook.removeprefix("docs/runbooks/") in RUNBOOKS, (
            rule["alert"],
            runbook,
        )
        assert (ROOT / runbook).is_file(), f"{rule['alert']}: {runbook} is missing"


def test_the_issue_s_alerts_are_all_there() -> None:
    names = {rule["alert"] for rule in rules()}
    assert {
        "PipelineConsumerLagHigh",
        "PipelineConsumerLagGrowing",
        "PipelineErrorRateHigh",
        "PipelineDownloadFailureRatioHigh",
        "PipelineDlqGrowing",
        "PipelineDlqOldEntries",
        "PipelineCircuitBreakerOpen",
        "PipelineAssetNotMaterialized",
        "PipelineDeltaWriteFailures",
        "PipelinePostgresWriteFailures",
        "PipelineLatencyP95High",
    } <= names


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    """alerts_test.yml shows each alert both firing (some expected alert) and not (none expected)."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - firing == set(), "never shown firing"
    assert names - quiet == set(), "never shown quiet"


@pytest.mark.stack
def test_promtool_checks_the_rules() -> None:
    result = run(binary("promtool"), "check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@pytest.mark.stack
def test_promtool_runs_the_rule_unit_tests() -> None:
    result = run(binary("promtool"), "test", "rules", ALERTS_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.stack
def test_promtool_fails_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: the breaker test expecting the wrong target does."""
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    breaker = next(case for case in tests["tests"] if case["name"].startswith("circuit breaker"))
    breaker["alert_rule_test"][-1]["exp_alerts"][0]["exp_labels"]["target"] = "claimx-api"
    tests["rule_files"] = [str(ALERTS)]
    tests["tests"] = [breaker]
    broken = tmp_path / "alerts_test.yml"
    broken.write_text(yaml.safe_dump(tests))
    result = run(binary("promtool"), "test", "rules", broken)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


@pytest.mark.stack
def test_the_config_templates_are_valid(tmp_path: Path) -> None:
    prometheus_yml = tmp_path / "prometheus.yml"
    prometheus_yml.write_text(
        render(
            PROMETHEUS_DIR / "prometheus.yml",
            SCRAPE_INTERVAL="15s",
            EVALUATION_INTERVAL="15s",
            RULE_FILE=str(ALERTS),
            ALERTMANAGER="127.0.0.1:9093",
            METRICS_TARGET="127.0.0.1:9464",
        )
    )
    result = run(binary("promtool"), "check", "config", prometheus_yml)
    assert result.returncode == 0, result.stdout + result.stderr
    alertmanager_yml = tmp_path / "alertmanager.yml"
    alertmanager_yml.write_text(
        render(
            PROMETHEUS_DIR / "alertmanager.yml",
            TEAMS_RELAY_URL="http://127.0.0.1:9097/alertmanager",
            GROUP_WAIT="30s",
            GROUP_INTERVAL="5m",
        )
    )
    amtool = Path(binary("alertmanager")).with_name("amtool")
    result = run(amtool, "check-config", alertmanager_yml)
    assert result.returncode == 0, result.stdout + result.stderr
