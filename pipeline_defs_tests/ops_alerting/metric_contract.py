"""The metric names the alert rules and dashboards may use: the contract with the metrics service
(``python -m pipeline_defs.ops``), whose ``pipeline_defs.ops.names`` holds the names (``CONTRACT``
and the service's other ``pipeline_*`` names). The label names live here (names.py has them
only in comments); ``FALLBACK`` stands in for the whole module wherever it cannot be imported,
and a test keeps the two in step."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

# name -> (type, label names); its names are names.CONTRACT (test_dashboards checks)
FALLBACK: dict[str, tuple[str, frozenset[str]]] = {
    "pipeline_kafka_consumer_lag": ("gauge", frozenset({"consumer_group", "topic", "partition"})),
    "pipeline_dlq_depth": ("gauge", frozenset({"dlq"})),
    "pipeline_dlq_oldest_entry_age_seconds": ("gauge", frozenset({"dlq"})),
    "pipeline_items_total": ("counter", frozenset({"asset", "kind", "outcome", "category"})),
    "pipeline_asset_seconds_since_success": ("gauge", frozenset({"asset"})),
    "pipeline_asset_pending_messages": ("gauge", frozenset({"asset"})),
    "pipeline_runs_queued": ("gauge", frozenset({"job"})),
    "pipeline_runs_failed_total": ("counter", frozenset({"job"})),
    "pipeline_circuit_breaker_open": ("gauge", frozenset({"target"})),
    "pipeline_write_failures_total": ("counter", frozenset({"sink"})),
    "pipeline_event_latency_p95_seconds": ("gauge", frozenset({"asset"})),
    "pipeline_cdc_replication_lag_seconds": ("gauge", frozenset({"table"})),
    "pipeline_scrape_duration_seconds": ("gauge", frozenset()),
    "pipeline_health_up": ("gauge", frozenset({"component"})),
    "pipeline_health_latency_seconds": ("gauge", frozenset({"component"})),
}
# Series Prometheus makes itself for every scrape target; `job` and `instance` are on every series.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
TARGET_LABELS = frozenset({"job", "instance"})


def names_module() -> Optional[ModuleType]:
    try:
        return importlib.import_module("pipeline_defs.ops.names")
    except ModuleNotFoundError:
        return None


def contract_names() -> set[str]:
    """Every ``pipeline_*`` metric name the metrics service promises."""
    module = names_module()
    if module is None:
        return set(FALLBACK)
    found = {value for value in vars(module).values() if isinstance(value, str) and value.startswith("pipeline_")}
    for value in vars(module).values():  # a mapping or collection of names, if it has one
        if isinstance(value, dict | list | tuple | set | frozenset):
            found |= {item for item in value if isinstance(item, str) and item.startswith("pipeline_")}
    return found


def labels_of(name: str) -> frozenset[str]:
    return FALLBACK[name][1] | TARGET_LABELS if name in FALLBACK else TARGET_LABELS
