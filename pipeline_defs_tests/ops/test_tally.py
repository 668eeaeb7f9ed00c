"""The pure parts of the ops service: what a materialization counts, breaker states, which
errors are write failures, lag arithmetic, the TTL cache, the metric names."""

from __future__ import annotations

from types import SimpleNamespace

import dagster as dg

from pipeline_defs.ops import names
from pipeline_defs.ops.collector import Cached
from pipeline_defs.ops.kafka_lag import lag_of
from pipeline_defs.ops.tally import Tally, breaker_states, error_sink, items_of, newer_than


def test_event_log_rows_and_rejections() -> None:
    items = items_of(
        "xact_events", {"rows_written": 7, "rejected_by_category": dg.MetadataValue.json({"invalid": 2, "malformed": 1})}
    )
    assert items == {
        ("xact_events", "events", "ok", ""): 7,
        ("xact_events", "events", "failed", "invalid"): 2,
        ("xact_events", "events", "failed", "malformed"): 1,
    }


def test_attachments_count_files_by_failure_category() -> None:
    metadata = {"rows_written": 3, "files_stored": 3, "failed_transient": 2, "circuit_open": 1, "failed_permanent": 0}
    items = items_of("xact_attachments", metadata)
    assert items[("xact_attachments", "files", "ok", "")] == 3
    assert items[("xact_attachments", "files", "failed", "transient")] == 2
    assert items[("xact_attachments", "files", "failed", "circuit_open")] == 1
    # every category from zero: a counter that first appears at 5 would hide its first increase
    assert items[("xact_attachments", "files", "failed", "permanent")] == 0
    assert items[("xact_attachments", "files", "failed", "auth")] == 0


def test_enrichment_entities_cdc_and_dlq_views() -> None:
    enrichment = items_of("claimx_enrichment_log", {"rows_written": 4, "events_enriched": 3, "failed_auth": 1})
    assert +enrichment == {
        ("claimx_enrichment_log", "enrichments", "ok", ""): 3,
        ("claimx_enrichment_log", "enrichments", "failed", "auth"): 1,
    }
    assert items_of("claimx_projects", {"rows_inserted": 2, "rows_updated": 1, "rows_unchanged": 9}) == {
        ("claimx_projects", "rows", "ok", ""): 3
    }
    cdc = items_of("cdc_claims__policies", {"events_read": 10, "inserted": 5, "updated": 2, "deleted": 1, "invalid": 2})
    assert cdc == {
        ("cdc_claims__policies", "rows", "ok", ""): 8,
        ("cdc_claims__policies", "rows", "failed", "invalid"): 2,
        ("cdc_claims__policies", "rows", "failed", "unprocessable"): 0,
    }
    assert items_of("dlq_xact_events", {"rows_written": 2}) == {("dlq_xact_events", "dead_letters", "ok", ""): 2}


def test_breaker_states_keep_each_targets_last_transition() -> None:
    transitions = ["a.test: closed -> open", "b.test: closed -> open", "a.test: open -> half_open", "a.test: half_open -> closed"]
    assert breaker_states(transitions) == {"a.test": "closed", "b.test": "open"}
    assert breaker_states(["closed -> open"]) == {"claimx-api": "open"}  # the ClaimX API's breaker has no key
    assert breaker_states("not a list") == {}


def test_a_new_report_without_transitions_closes_the_breakers_of_its_asset() -> None:
    tally = Tally()
    tally.add_materialization("xact_attachments", 1.0, {"circuit_transitions": dg.MetadataValue.json(["h: closed -> open"])})
    tally.add_materialization("claimx_enrichment_log", 1.0, {"circuit_transitions": dg.MetadataValue.json(["closed -> open"])})
    assert tally.breaker_open() == {"h": 1, "claimx-api": 1}
    tally.add_materialization("xact_attachments", 2.0, {"circuit_transitions": dg.MetadataValue.json([])})
    assert tally.breaker_open() == {"claimx-api": 1}


def test_tally_keeps_latest_gauges_and_sums_items() -> None:
    tally = Tally()
    tally.add_materialization("xact_events", 10.0, {"rows_written": 2, "latency_p95_s": 1.5})
    tally.add_materialization("xact_events", 20.0, {"rows_written": 3, "latency_p95_s": 0.5})
    tally.add_materialization(
        "cdc_claims__notes", 15.0, {"events_read": 1, "inserted": 1, "replication_lag_s": dg.FloatMetadataValue(4.0)}
    )
    tally.add_materialization(
        "cdc_claims__other", 15.0, {"events_read": 0, "inserted": 0, "replication_lag_s": dg.FloatMetadataValue(None)}
    )
    assert tally.items[("xact_events", "events", "ok", "")] == 5
    assert tally.last_success == {"xact_events": 20.0, "cdc_claims__notes": 15.0, "cdc_claims__other": 15.0}
    assert tally.latency_p95 == {"xact_events": (0.5, 20.0)}
    assert tally.replication_lag == {"claims__notes": (4.0, 15.0)}
    assert newer_than(tally.latency_p95, since=20.0) == {"xact_events": 0.5}
    assert newer_than(tally.latency_p95, since=20.1) == {}  # an old report says nothing about now


def test_breakers_of_old_reports_are_dropped() -> None:
    tally = Tally()
    tally.add_materialization("xact_attachments", 10.0, {"circuit_transitions": dg.MetadataValue.json(["h: closed -> open"])})
    assert tally.breaker_open(since=10.0) == {"h": 1}
    assert tally.breaker_open(since=11.0) == {}


def test_write_failures_by_error_class_and_cause() -> None:
    def error(cls_name: str, cause: object = None) -> SimpleNamespace:
        return SimpleNamespace(cls_name=cls_name, cause=cause, context=None)

    assert error_sink(error("CommitFailedError")) == "delta"
    assert error_sink(error("DagsterExecutionStepExecutionError", error("PostgresUnavailable"))) == "postgres"
    assert error_sink(error("OperationalError")) == "postgres"
    assert error_sink(error("KafkaUnavailableError")) is None
    assert error_sink(None) is None


def test_lag_is_end_minus_committed_and_feeds_count_from_the_log_start() -> None:
    ends = {("t", 0): 10, ("t", 1): 5, ("u", 0): 7}
    starts = {("t", 0): 0, ("t", 1): 3, ("u", 0): 2}
    committed = {"g": {("t", 0): 4, ("t", 1): 1}}
    lag = lag_of(ends, starts, committed, {("g", "t"), ("h", "u")})
    assert lag == {("g", "t", 0): 6, ("g", "t", 1): 2, ("h", "u", 0): 5}


def test_cache_reloads_only_after_its_ttl() -> None:
    now = [0.0]
    loads = iter(range(100))
    cached = Cached(lambda: next(loads), ttl_s=5.0, clock=lambda: now[0])
    assert cached.get() == 0
    now[0] = 4.9
    assert cached.get() == 0
    now[0] = 5.0
    assert cached.get() == 1


def test_contract_names_are_unique_and_prefixed() -> None:
    assert len(set(names.CONTRACT)) == len(names.CONTRACT) == 15
    assert all(name.startswith("pipeline_") for name in names.CONTRACT)
    assert set(names.COUNTERS) <= set(names.CONTRACT)


def test_errors_never_carry_credentials() -> None:
    from pipeline_defs.ops.health import redact

    text = "could not connect to postgresql://dagster:s3cret@db:5432/x; AccountKey=abc123==;sig=zzz&se=1 password=hunter2"
    cleaned = redact(text)
    assert "s3cret" not in cleaned and "abc123" not in cleaned and "zzz" not in cleaned and "hunter2" not in cleaned
    assert "postgresql://***@db:5432/x" in cleaned
