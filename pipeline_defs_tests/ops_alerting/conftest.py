"""Fixtures of the alerting tests: a real Prometheus (Debian's) on a port of its own, scraping a
``/metrics`` endpoint that shows every metric of the contract once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_defs_tests.ops_alerting.metric_contract import FALLBACK
from pipeline_defs_tests.support.prometheus import Service, exposition, metrics_endpoint, prometheus


def every_metric_once() -> str:
    """One series of every contract metric, at values no alert fires on."""
    samples = {}
    for name, (kind, labels) in FALLBACK.items():
        value = 1.0 if name in ("pipeline_health_up",) else 0.0
        samples[name] = (kind, [({label: "sample" for label in sorted(labels)}, value)])
    return exposition(samples)


@pytest.fixture(scope="module")
def query_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory: Path = tmp_path_factory.mktemp("prometheus")
    with metrics_endpoint(every_metric_once()) as endpoint, prometheus(directory, endpoint.address) as service:
        yield service
