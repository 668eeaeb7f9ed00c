"""The Grafana dashboards (deploy/grafana/*.json): Grafana's dashboard model with a
``${DS_PROMETHEUS}`` input, and every panel's PromQL (and every alert rule's) using only metric
and label names of the contract, and parsing under the real Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # stubs may or may not be installed

from pipeline_defs_tests.ops_alerting.metric_contract import FALLBACK, PROMETHEUS_SERIES, contract_names, labels_of, names_module
from pipeline_defs_tests.ops_alerting.promql import expand_grafana, usage
from pipeline_defs_tests.support.prometheus import ALERTS, GRAFANA_DIR, Service, query

DASHBOARDS = ["pipeline-overview", "downloads", "dlq", "claimx", "cdc"]
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Prometheus' own series about alerts, with their labels (besides the alert's own).
ALERT_SERIES = {"ALERTS": {"alertname", "alertstate", "severity"}}
LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\)$")


def dashboard(name: str) -> dict[str, Any]:
    return json.loads((GRAFANA_DIR / f"{name}.json").read_text())


def panel_exprs() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every target of every panel."""
    return [
        (name, panel["title"], target["expr"])
        for name in DASHBOARDS
        for panel in dashboard(name)["panels"]
        for target in panel.get("targets", [])
    ]


def rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def variable_selectors() -> list[tuple[str, str, str]]:
    """(dashboard, variable, the series selector of its ``label_values(...)`` query)."""
    found = []
    for name in DASHBOARDS:
        for variable in dashboard(name).get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                match = LABEL_VALUES.match(variable["query"]["query"])
                assert match and match.group(1), f"{name}: variable {variable['name']} is not label_values(<selector>, <label>)"
                found.append((name, variable["name"], match.group(1)))
    return found


def known_labels(metric: str) -> set[str]:
    return set(ALERT_SERIES.get(metric, set())) | set(labels_of(metric))


def check_names(where: str, expr: str) -> None:
    used = usage(expr)
    allowed = contract_names() | PROMETHEUS_SERIES | set(ALERT_SERIES)
    unknown = used.metrics - allowed
    assert not unknown, f"{where}: metrics outside the contract: {sorted(unknown)} in {expr!r}"
    for metric, labels in used.matcher_labels.items():
        extra = labels - known_labels(metric)
        assert not extra, f"{where}: {metric} has no label {sorted(extra)} in {expr!r}"
    by_labels = set().union(*(known_labels(metric) for metric in used.metrics)) if used.metrics else set()
    extra = used.clause_labels - by_labels
    assert not extra, f"{where}: grouping by labels none of its metrics has: {sorted(extra)} in {expr!r}"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_model(name: str) -> None:
    model = dashboard(name)
    assert [i["name"] for i in model["__inputs"]] == ["DS_PROMETHEUS"]
    assert model["__inputs"][0]["pluginId"] == "prometheus"
    assert model["uid"] and model["title"] and model["schemaVersion"] >= 36
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert len(model["panels"]) >= 5
    for panel in model["panels"]:
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["description"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), panel["title"]
    for variable in model.get("templating", {}).get("list", []):
        assert variable["datasource"] == DATASOURCE


def test_the_dashboards_cover_every_metric_of_the_contract() -> None:
    used = set().union(*(usage(expr).metrics for _, _, expr in panel_exprs()))
    assert set(FALLBACK) - used == set()


def test_panel_expressions_use_the_contract_s_names() -> None:
    for name, title, expr in panel_exprs():
        check_names(f"{name} / {title}", expr)
    for name, variable, selector in variable_selectors():
        check_names(f"{name} / ${variable}", selector)


def test_alert_expressions_use_the_contract_s_names() -> None:
    for alert, expr in rule_exprs():
        check_names(alert, expr)


def test_the_label_sets_here_are_for_the_metrics_service_s_contract() -> None:
    """``FALLBACK`` (the label sets) names exactly ``pipeline_defs.ops.names.CONTRACT``."""
    module = names_module()
    if module is None:
        pytest.skip("pipeline_defs.ops.names is missing: the fallback list is the contract")
    assert set(FALLBACK) == set(module.CONTRACT)
    assert set(FALLBACK) <= contract_names()


def test_the_name_check_catches_strangers() -> None:
    with pytest.raises(AssertionError, match="outside the contract"):
        check_names("probe", 'sum(rate(pipeline_itemz_total{outcome="failed"}[5m]))')
    with pytest.raises(AssertionError, match="has no label"):
        check_names("probe", 'pipeline_dlq_depth{topic="x"}')
    with pytest.raises(AssertionError, match="grouping by labels"):
        check_names("probe", "sum by (dlq) (pipeline_kafka_consumer_lag)")


def all_expressions() -> list[tuple[str, str]]:
    return [
        *((f"{name} / {title}", expand_grafana(expr)) for name, title, expr in panel_exprs()),
        *((f"{name} / ${variable}", expand_grafana(selector)) for name, variable, selector in variable_selectors()),
        *rule_exprs(),
    ]


@pytest.mark.stack
def test_every_expression_parses_in_prometheus(query_prometheus: Service) -> None:
    status, answer = query(query_prometheus.url, "sum by (dlq) (rate(pipeline_dlq_depth[5m])) +")
    assert status == 400 and answer["errorType"] == "bad_data", "an invalid expression must be refused"
    failures = []
    for where, expr in all_expressions():
        status, answer = query(query_prometheus.url, expr)
        if status != 200 or answer.get("status") != "success":
            failures.append(f"{where}: {answer.get('errorType')}: {answer.get('error')} in {expr!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.stack
def test_prometheus_scrapes_every_metric_of_the_contract(query_prometheus: Service) -> None:
    """The endpoint the queries ran against does expose the contract (so a selector matching
    nothing is a typo, not an empty endpoint)."""
    from pipeline_defs_tests.support.prometheus import wait_for

    def scraped() -> set[str] | None:
        status, answer = query(query_prometheus.url, 'group by (__name__) ({__name__=~"pipeline_.+"})')
        names = {series["metric"]["__name__"] for series in answer.get("data", {}).get("result", [])} if status == 200 else set()
        return names if names >= set(FALLBACK) else None

    assert wait_for("Prometheus has scraped every contract metric", scraped) >= set(FALLBACK)


def test_grafana_dir_holds_only_the_dashboards() -> None:
    assert sorted(p.stem for p in Path(GRAFANA_DIR).glob("*.json")) == sorted(DASHBOARDS)
