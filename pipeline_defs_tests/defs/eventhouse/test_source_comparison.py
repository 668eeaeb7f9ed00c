"""The migration's parallel run: the Eventhouse poller and another producer (Event Hub) feed one
topic; the comparison job says which ids of a window each source delivered and which it lacks."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import dagster as dg

from pipeline_defs.domains import DOMAINS
from pipeline_defs_tests.support.domains.eventhouse import at, current_window, events, poll
from pipeline_sim.kusto import KustoDouble


def comparison_job() -> dg.JobDefinition:
    for domain in DOMAINS:
        for job in domain.defs.jobs or []:
            if isinstance(job, dg.JobDefinition) and job.name == "eventhouse_xact_events_source_comparison_job":
                return job
    raise LookupError("eventhouse_xact_events_source_comparison_job")


def test_the_comparison_names_what_each_source_lacks(
    resources, instance, kusto_double: KustoDouble, kusto_tables, kafka, topics
) -> None:
    window = current_window()
    both, only_eventhouse, only_eventhub = events(5), events(2), events(3)
    kusto_double.ingest(kusto_tables["xact_events"], both + only_eventhouse, ingestion_time=at(window, 4))
    assert poll(window, resources, instance)["new"] == 7
    producer = kafka.producer()
    stamp_ms = int((window.start + timedelta(seconds=5)).timestamp() * 1000)
    for event in both + only_eventhub:  # Event Hub's copies: no poller header, stamped inside the window
        producer.produce(topics.xact.events, json.dumps(event).encode(), event["trace_id"].encode(), timestamp=stamp_ms)
    assert producer.flush(10) == 0

    config = {"start": window.start.isoformat(), "end": window.end.isoformat(), "margin_s": 60}
    result = comparison_job().execute_in_process(
        run_config={"ops": {"compare_xact_events_sources": {"config": config}}}, resources=resources, instance=instance
    )
    (observation,) = [
        e.asset_observation_data.asset_observation for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"
    ]
    found: dict[str, Any] = {k: v.value for k, v in observation.metadata.items()}
    assert (found["in_eventhouse"], found["delivered_by_poller"], found["delivered_by_other_source"]) == (7, 7, 8)
    assert found["missing_from_other_source"] == 2 and found["missing_from_eventhouse"] == 3
    assert set(found["sample_missing_from_eventhouse"].split(", ")) == {e["trace_id"] for e in only_eventhub}
    assert found["agree"] is False
