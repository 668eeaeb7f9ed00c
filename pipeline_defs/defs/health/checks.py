"""Is each Kafka-fed asset keeping up? One ``consumer_keeps_up`` check per table, evaluated on
a schedule: it fails when the consumer has lag and no successful run for ``stale_after_min``
(a stalled range or a stopped sensor), warns when the lag grew well past what the last
successful run saw, and fails when a watermark lies past its partition's log end (the topic was
recreated or truncated: see ``kafka_offsets_reset_job``)."""

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import dagster as dg

from pipeline_defs.lib.health.lag import feed_lag
from pipeline_defs.lib.ingest.feeds import KafkaFeed
from pipeline_defs.lib.kafka.clients import KafkaUnavailableError


def consumer_keeps_up_check(table: str, feeds: Sequence[KafkaFeed]) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=table,
        name="consumer_keeps_up",
        required_resource_keys={"kafka", "source_kafka", "lake", "ingest", *(k for f in feeds for k in f.resource_keys)},
        description=(
            "Fails when the consumer has lag but no successful run for ingest.stale_after_min, or a watermark "
            "lies past the log end; warns when the lag grew by more than ingest.lag_growth_warn since the last run."
        ),
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        resources: Any = context.resources
        ingest = resources.ingest.ingest
        try:
            lag = feed_lag(feeds, resources)
        except KafkaUnavailableError as exc:
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"kafka_unavailable": str(exc)}
            )
        last = context.instance.get_latest_materialization_event(dg.AssetKey(table))
        minutes_since = (time.time() - last.timestamp) / 60 if last is not None else None
        lag_then = _metadata_int(last, "lag_total")
        stale = lag.total > 0 and (minutes_since is None or minutes_since > ingest.stale_after_min)
        growing = lag_then is not None and lag.total - lag_then > ingest.lag_growth_warn
        metadata = {
            "lag": lag.total,
            "lag_at_last_run": lag_then if lag_then is not None else -1,
            "minutes_since_last_run": round(minutes_since, 1) if minutes_since is not None else -1,
            "offsets_past_log_end": dg.MetadataValue.json(lag.past_log_end),
        }
        if stale or lag.past_log_end:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)
        return dg.AssetCheckResult(passed=not growing, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)

    return _check


def _metadata_int(event: dg.EventLogEntry | None, key: str) -> int | None:
    materialization = event.asset_materialization if event is not None else None
    value = materialization.metadata.get(key) if materialization is not None else None
    return int(value.value) if value is not None and isinstance(value.value, (int, float)) else None


def consumer_checks(feeds: Sequence[KafkaFeed]) -> list[dg.AssetChecksDefinition]:
    by_table: dict[str, list[KafkaFeed]] = defaultdict(list)
    for feed in feeds:
        by_table[feed.table].append(feed)
    return [consumer_keeps_up_check(table, table_feeds) for table, table_feeds in by_table.items()]
