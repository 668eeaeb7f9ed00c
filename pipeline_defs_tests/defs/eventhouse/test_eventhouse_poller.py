"""The Eventhouse poller end to end: the Kusto double (the real client over REST v2) -> the poll
asset -> events.raw on the real broker -> xact_events in Delta. Windows with late rows, the
overlap, duplicates across windows, throttling, broken rows, a run that fails in the middle of
a window, a backfill of a day: every id lands once, the broken ones in the DLQ with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest

from pipeline_defs.defs.eventhouse.assets import poll_asset_name
from pipeline_defs.defs.xact.assets import xact_events
from pipeline_defs.defs.xact.sensors import xact_events_kafka_sensor
from pipeline_defs.domains import DOMAINS
from pipeline_defs.lib.dlq.records import error_headers
from pipeline_defs.lib.kusto.resource import KustoResource
from pipeline_defs.lib.kusto.windows import WINDOW_TAG, PollWindow
from pipeline_defs_tests.support.domains.eventhouse import WINDOW_S, at, current_window, events, poll, poll_asset
from pipeline_defs_tests.support.kafka import as_json, run_all, table_rows
from pipeline_sim.kusto import KustoDouble


def landed(resources: dict, instance: dg.DagsterInstance, lake) -> list[str]:
    run_all(xact_events_kafka_sensor, xact_events, resources, instance)
    rows = table_rows(lake, "xact_events")
    return [] if rows.is_empty() else rows["trace_id"].to_list()


@pytest.fixture
def table(kusto_tables: dict[str, str]) -> str:
    return kusto_tables["xact_events"]


def test_a_window_lands_once_and_polling_it_again_sends_nothing(
    resources, instance, lake, kusto_double: KustoDouble, table: str, consume_all, topics
) -> None:
    window = current_window()
    batch = events(120)  # page_rows 50: three pages of one extent
    kusto_double.ingest(table, batch, ingestion_time=at(window, 3))
    first = poll(window, resources, instance)
    assert (first["rows_read"], first["new"], first["pages"]) == (120, 120, 3)
    assert first["kusto_request_ids"]  # Kusto's activity ids, for a support ticket
    keys = {m.key().decode() for m in consume_all(topics.xact.events)}
    assert keys == {e["trace_id"] for e in batch}  # keyed by the event's id
    assert sorted(landed(resources, instance, lake)) == sorted(keys)

    again = poll(window, resources, instance)
    assert (again["new"], again["anti_join_ids"]) == (0, 120)  # Kusto left them out (the anti-join)
    assert len(consume_all(topics.xact.events)) == 120


def test_late_rows_within_the_overlap_and_duplicates_across_windows_land_once(
    resources, instance, lake, kusto_double: KustoDouble, table: str
) -> None:
    first = current_window()
    second = PollWindow(first.end, first.end + timedelta(seconds=WINDOW_S))
    early, late, repeated = events(5), events(3), events(2)
    kusto_double.ingest(table, early + repeated, ingestion_time=at(first, 1))
    assert poll(first, resources, instance)["new"] == 7
    assert len(landed(resources, instance, lake)) == 7
    # Rows that carry an ingestion time in the first window but became visible after it was
    # polled (within the 5 s overlap), and the source resending two events in the next window.
    kusto_double.ingest(table, late, ingestion_time=at(first, WINDOW_S - 2))
    kusto_double.ingest(table, repeated, ingestion_time=at(second, 4))
    outcome = poll(second, resources, instance)
    assert outcome["new"] == 3 and outcome["anti_join_ids"] == 7  # the resent two are left out by Kusto
    assert sorted(landed(resources, instance, lake)) == sorted(e["trace_id"] for e in early + late + repeated)


def test_a_repoll_before_the_table_has_the_rows_is_absorbed_by_its_dedup(
    resources, instance, lake, kusto_double: KustoDouble, table: str, consume_all, topics
) -> None:
    window = current_window()
    batch = events(30)
    kusto_double.ingest(table, batch, ingestion_time=at(window, 5))
    poll(window, resources, instance)
    assert poll(window, resources, instance)["new"] == 30  # xact_events has not read them yet
    assert len(consume_all(topics.xact.events)) == 60
    assert sorted(landed(resources, instance, lake)) == sorted(e["trace_id"] for e in batch)


def test_throttling_and_a_failure_in_the_middle_of_a_window_lose_and_double_nothing(
    resources, instance, lake, kusto_double: KustoDouble, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = current_window()
    batch = events(150)  # three pages
    kusto_double.ingest(table, batch, ingestion_time=at(window, 5))
    kusto_double.fail_next("throttle", count=2)
    throttled = poll(window, resources, instance)
    assert throttled["new"] == 150 and throttled["query_attempts"] == throttled["pages"] + 2
    more = events(150)
    kusto_double.ingest(table, more, ingestion_time=at(window, 6))
    # The first page of the next poll goes out, then Kusto fails every attempt at the second:
    # the step fails, and its retry policy runs it again from the window's start.
    real_query, answered = KustoResource.query, []

    def first_page_then_kusto_fails(self: KustoResource, *args: Any) -> Any:
        answer = real_query(self, *args)
        answered.append(answer)
        if len(answered) == 1:
            kusto_double.fail_next("error500", count=self.connection.max_attempts)
        return answer

    monkeypatch.setattr(KustoResource, "query", first_page_then_kusto_fails)
    retried = poll(window, resources, instance)
    assert retried["new"] == 300  # none of it had landed yet: all sent again, the table keeps each once
    assert sorted(landed(resources, instance, lake)) == sorted(e["trace_id"] for e in batch + more)


def test_broken_rows_go_to_the_dlq_with_their_reason_and_the_rest_lands(
    resources, instance, lake, kusto_double: KustoDouble, table: str, consume_all, topics
) -> None:
    window = current_window()
    good = events(4)
    broken: list[dict[str, Any]] = [
        {"event_type": "x", "payload": {"no": "id"}},  # no trace_id
        {"trace_id": None, "event_type": "x"},
        {"trace_id": "", "event_type": "x"},
        {"trace_id": "EH-bad-time", "event_type": "x", "event_subtype": "y", "timestamp": "not a time"},
        {
            "trace_id": "EH-deep",
            "event_type": "x",
            "event_subtype": "y",
            "timestamp": "2026-01-01T00:00:00Z",
            "payload": [[[[]]]],
        },
        {"trace_id": "EH-\u202e-odd id", "event_type": "x", "event_subtype": "y", "timestamp": "2026-01-01T00:00:00Z"},
        {"trace_id": 12345, "event_type": 7, "event_subtype": None, "timestamp": 0},
    ]
    kusto_double.ingest(table, good + broken, ingestion_time=at(window, 2))
    outcome = poll(window, resources, instance)
    assert (outcome["rows_read"], outcome["dead_lettered"]) == (11, 3)
    odd = "EH-\u202e-odd id"  # xact_events takes any non-empty text as a trace_id
    assert sorted(landed(resources, instance, lake)) == sorted([*(e["trace_id"] for e in good), odd])
    letters = [error_headers(m) for m in consume_all(topics.xact.events_dlq)]
    reasons = sorted(h["reason"] for h in letters)
    assert reasons.count(f"{table}: row has no trace_id") == 3
    assert len(letters) == 6  # the poller's three and xact_events' three (it validates what it reads)
    assert all(h["category"] in ("invalid", "malformed") for h in letters)
    assert not any("not a time" in h["reason"] for h in letters)  # reasons never echo values


def test_a_backfill_of_a_day_repolls_its_windows_and_adds_only_what_is_missing(
    resources, instance, lake, kusto_double: KustoDouble, table: str, consume_all, topics
) -> None:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    morning, evening = events(40), events(25)
    kusto_double.ingest(table, morning, ingestion_time=f"{yesterday.isoformat()}T08:00:00+00:00")
    kusto_double.ingest(table, evening, ingestion_time=f"{yesterday.isoformat()}T23:59:59+00:00")
    first = poll(None, resources, instance, day=yesterday.isoformat())
    assert (first["new"], first["windows"]) == (65, 24)  # backfill_window_s: one hour
    assert sorted(landed(resources, instance, lake)) == sorted(e["trace_id"] for e in morning + evening)
    assert poll(None, resources, instance, day=yesterday.isoformat())["new"] == 0
    assert len(consume_all(topics.xact.events)) == 65
    assert all(as_json(m)["trace_id"].startswith("EH-") for m in consume_all(topics.xact.events))


def test_a_window_outside_its_partition_is_refused(resources, instance) -> None:
    window = current_window()
    result = dg.materialize(
        [poll_asset()],
        partition_key=(window.day - timedelta(days=1)).isoformat(),
        tags={WINDOW_TAG: window.tag},
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success


def test_every_source_has_a_poll_asset() -> None:
    assert {poll_asset_name(s) for d in DOMAINS for s in d.eventhouse_sources} == {
        "eventhouse_xact_events",
        "eventhouse_claimx_events",
    }
