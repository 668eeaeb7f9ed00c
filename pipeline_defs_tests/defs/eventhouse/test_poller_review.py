"""Review of the Eventhouse poller: defects found, each a failing test (expected behaviour per
the project rules: no run fails because of data, every row becomes a record or a dead letter,
re-polls and backfills leave each id once in xact_events)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import pytest

from pipeline_defs.defs.xact.assets import xact_events
from pipeline_defs.defs.xact.sensors import xact_events_kafka_sensor
from pipeline_defs.lib.dlq.records import error_headers
from pipeline_defs.lib.kusto.windows import WINDOW_TAG
from pipeline_defs_tests.support.domains.eventhouse import at, current_window, events, poll, poll_asset
from pipeline_defs_tests.support.kafka import as_json, execute, table_rows, tick
from pipeline_sim.kusto import KustoDouble


@pytest.fixture
def table(kusto_tables: dict[str, str]) -> str:
    return kusto_tables["xact_events"]


def consume(resources: dict, instance: dg.DagsterInstance, day: date | None = None) -> None:
    """xact_events reads what the poller sent, as its sensor plans it; ``day``: the day the
    stream ran (its runs' partition), today unless given."""
    cursor = None
    for _ in range(20):
        data = tick(xact_events_kafka_sensor, instance, resources, cursor)
        cursor = data.cursor or cursor
        if not data.run_requests:
            return
        for request in data.run_requests:
            if day is not None:
                request = request.with_replaced_attrs(partition_key=day.isoformat())
            assert execute(xact_events, request, resources, instance).success
    raise AssertionError("the sensor kept planning")


def try_poll(window, resources: dict, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [poll_asset()],
        partition_key=window.day.isoformat(),
        tags={WINDOW_TAG: window.tag},
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def test_rows_without_an_id_in_one_extent_are_all_dead_lettered_across_a_page_boundary(
    resources, instance, kusto_double: KustoDouble, table: str, consume_all, topics
) -> None:
    """page_rows is 50: the cursor after page 1 is (ticks, ""), and page 2 asks for
    strcmp(_id, "") > 0, so the id-less rows of that extent past the page are never read."""
    window = current_window()
    broken = [{"event_type": "x", "n": n} for n in range(60)]  # one extent: one ingestion_time
    kusto_double.ingest(table, broken, ingestion_time=at(window, 3))
    outcome = poll(window, resources, instance)
    letters = consume_all(topics.xact.events_dlq)
    assert (outcome["rows_read"], outcome["dead_lettered"], len(letters)) == (60, 60, 60)


def test_id_less_rows_straddling_a_page_boundary_are_not_lost(
    resources, instance, kusto_double: KustoDouble, table: str, consume_all, topics
) -> None:
    """45 good rows, then an extent of 10 id-less rows: page 1 ends 5 rows into the extent."""
    window = current_window()
    kusto_double.ingest(table, events(45), ingestion_time=at(window, 2))
    kusto_double.ingest(table, [{"event_type": "x", "n": n} for n in range(10)], ingestion_time=at(window, 3))
    outcome = poll(window, resources, instance)
    assert (outcome["new"], outcome["dead_lettered"]) == (45, 10)
