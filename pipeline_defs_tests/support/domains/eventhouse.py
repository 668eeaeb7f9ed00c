"""The Eventhouse's test resources: one Kusto double (``pipeline_sim.kusto``) per session, each
test on tables of its own names, and poll settings measured in seconds; and polling a window."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest

from pipeline_defs.defs.eventhouse.settings import EventhouseConfigResource, EventhouseSettings
from pipeline_defs.domains import DOMAINS
from pipeline_defs.lib.kusto.poller import PollSettings
from pipeline_defs.lib.kusto.resource import KustoConnection, KustoResource
from pipeline_defs.lib.kusto.windows import WINDOW_TAG, PollWindow, align
from pipeline_defs_tests.support.kafka import metadata_of
from pipeline_sim.events import xact_event
from pipeline_sim.kusto import KustoDouble

TEST_POLL = PollSettings(window_s=10, lag_s=0, overlap_s=5, page_rows=50, replan_after_s=0)


@pytest.fixture(scope="session")
def kusto_double() -> Iterator[KustoDouble]:
    double = KustoDouble().start_in_thread()
    yield double
    double.stop_thread()


@pytest.fixture
def kusto_tables() -> dict[str, str]:
    """Kusto table per source asset, named for this test."""
    suffix = uuid.uuid4().hex[:8]
    return {"xact_events": f"XactEvents_{suffix}", "claimx_events": f"ClaimXEvents_{suffix}"}


@pytest.fixture
def eventhouse_resources(kusto_double: KustoDouble, kusto_tables: dict[str, str]) -> dict[str, object]:
    connection = KustoConnection(cluster_url=kusto_double.base_url, query_timeout_s=5, max_attempts=4, backoff_s=0.05)
    settings = EventhouseSettings(enabled=True, kusto=connection, poll=TEST_POLL, tables=kusto_tables)
    for table in kusto_tables.values():
        kusto_double.create_table(table)
    return {"eventhouse": EventhouseConfigResource(settings=settings), "kusto": KustoResource(connection=connection)}


WINDOW_S = TEST_POLL.window_s


def poll_asset(name: str = "xact_events") -> dg.AssetsDefinition:
    for domain in DOMAINS:
        for asset in domain.defs.assets or []:
            if isinstance(asset, dg.AssetsDefinition) and dg.AssetKey(f"eventhouse_{name}") in asset.keys:
                return asset
    raise LookupError(name)


def events(count: int) -> list[dict[str, Any]]:
    rng = random.Random(count)
    return [{**xact_event(rng, "https://attachments.test"), "trace_id": f"EH-{uuid.uuid4().hex[:12]}"} for _ in range(count)]


def current_window() -> PollWindow:
    start = align(datetime.now(UTC), WINDOW_S) - timedelta(seconds=2 * WINDOW_S)
    return PollWindow(start, start + timedelta(seconds=WINDOW_S))


def at(window: PollWindow, seconds: float) -> str:
    return (window.start + timedelta(seconds=seconds)).isoformat()


def poll(window: PollWindow | None, resources: dict, instance: dg.DagsterInstance, day: str | None = None) -> dict[str, Any]:
    asset = poll_asset()
    tags = {WINDOW_TAG: window.tag} if window else {}
    partition = day or (window.day.isoformat() if window else datetime.now(UTC).date().isoformat())
    result = dg.materialize([asset], partition_key=partition, tags=tags, resources=resources, instance=instance)
    assert result.success
    return metadata_of(result)
