"""The metric names and labels: a contract. Prometheus alert rules and Grafana dashboards are
written against exactly these; add new ones, never rename."""

from __future__ import annotations

# Kafka: end offset - committed offset of the pipeline's consumer groups, every pipeline topic
# (retry and DLQ topics included). Labels: consumer_group, topic, partition.
KAFKA_CONSUMER_LAG = "pipeline_kafka_consumer_lag"
# DLQ views (Delta): open ("waiting") entries and the oldest one's age. Label: dlq.
DLQ_DEPTH = "pipeline_dlq_depth"
DLQ_OLDEST_ENTRY_AGE_SECONDS = "pipeline_dlq_oldest_entry_age_seconds"
# Items processed by assets, from their materialization metadata. Labels: asset, kind
# (events | rows | files | enrichments | dead_letters), outcome (ok | failed), category ("" when ok).
ITEMS_TOTAL = "pipeline_items_total"
ASSET_SECONDS_SINCE_SUCCESS = "pipeline_asset_seconds_since_success"  # label: asset
# Messages due for an asset: its consumer group's lag without the retry topics (label: asset).
# A stale asset with nothing due is a quiet pipeline, not a down one.
ASSET_PENDING_MESSAGES = "pipeline_asset_pending_messages"
RUNS_QUEUED = "pipeline_runs_queued"  # label: job
RUNS_FAILED_TOTAL = "pipeline_runs_failed_total"  # label: job; runs failed since the service started
CIRCUIT_BREAKER_OPEN = "pipeline_circuit_breaker_open"  # label: target (host or API), 0/1
WRITE_FAILURES_TOTAL = "pipeline_write_failures_total"  # label: sink (delta | postgres)
EVENT_LATENCY_P95_SECONDS = "pipeline_event_latency_p95_seconds"  # label: asset
CDC_REPLICATION_LAG_SECONDS = "pipeline_cdc_replication_lag_seconds"  # label: table
SCRAPE_DURATION_SECONDS = "pipeline_scrape_duration_seconds"
HEALTH_UP = "pipeline_health_up"  # label: component (kafka | storage | dagster | claimx_api), 0/1
HEALTH_LATENCY_SECONDS = "pipeline_health_latency_seconds"  # label: component

# Beyond the contract: whether each part of a scrape could be read (label: source), and how
# far the Kafka sources are (label: topic, partition).
SOURCE_UP = "pipeline_ops_source_up"
PART_SECONDS = "pipeline_ops_part_seconds"  # label: source; what each part of the scrape cost
KAFKA_END_OFFSET = "pipeline_kafka_end_offset"

# Counters: their samples carry exactly these names (the text format's family name, in
# ``# TYPE`` lines and in the parser's families, is the name without ``_total``).
COUNTERS = (ITEMS_TOTAL, RUNS_FAILED_TOTAL, WRITE_FAILURES_TOTAL)

CONTRACT = (
    KAFKA_CONSUMER_LAG,
    DLQ_DEPTH,
    DLQ_OLDEST_ENTRY_AGE_SECONDS,
    ITEMS_TOTAL,
    ASSET_SECONDS_SINCE_SUCCESS,
    ASSET_PENDING_MESSAGES,
    RUNS_QUEUED,
    RUNS_FAILED_TOTAL,
    CIRCUIT_BREAKER_OPEN,
    WRITE_FAILURES_TOTAL,
    EVENT_LATENCY_P95_SECONDS,
    CDC_REPLICATION_LAG_SECONDS,
    SCRAPE_DURATION_SECONDS,
    HEALTH_UP,
    HEALTH_LATENCY_SECONDS,
)

HEALTH_COMPONENTS = ("kafka", "storage", "dagster", "claimx_api")
