"""``cdc_backfill_job`` (Launchpad): replay a table's topic from an offset or a time and apply the
history without the staleness threshold; the writetime check still keeps every newer row. The
replay has a consumer group of its own, named after its start, so re-executing it skips what it
already applied and the live group's offsets are left alone."""

import hashlib
from datetime import datetime
from typing import Any, Optional

import dagster as dg

from pipeline_defs.defs.cdc.assets import catch_up_ranges, group_id, replicator, report_metadata
from pipeline_defs.defs.cdc.settings import CdcSettings
from pipeline_defs.lib.kafka.resource import KafkaResource


class CdcBackfillConfig(dg.Config):
    table: str  # "<keyspace>.<table>", as declared under cdc.tables
    from_offset: Optional[int] = None  # every partition from this offset ...
    from_time: Optional[str] = None  # ... or from the first record at or after this ISO 8601 instant (with a zone)


@dg.op(required_resource_keys={"kafka", "cdc", "cdc_postgres", "files", "ingest"})
def cdc_backfill(context: dg.OpExecutionContext, config: CdcBackfillConfig) -> dg.Output[None]:
    resources: Any = context.resources
    settings: CdcSettings = resources.cdc.settings
    declared = {f"{t.keyspace}.{t.table}": t.spec() for t in settings.tables}
    if config.table not in declared:
        raise dg.Failure(
            f"{config.table!r} is not under cdc.tables ({', '.join(declared) or 'none declared'})", allow_retries=False
        )
    spec = declared[config.table]
    kafka: KafkaResource = resources.kafka
    starts = _starts(kafka, spec.topic, config)
    ranges = catch_up_ranges(kafka, spec.topic, starts)
    run = replicator(resources, spec, context.run.run_id, backfill=True)
    start_label = f"{config.from_offset}|{config.from_time}"
    run.group_id = f"{group_id(resources, spec)}.backfill.{hashlib.sha256(start_label.encode()).hexdigest()[:10]}"
    report = run.run(ranges)
    return dg.Output(None, metadata={"table": config.table, "group": run.group_id, **report_metadata(report, ranges)})


def _starts(kafka: KafkaResource, topic: str, config: CdcBackfillConfig) -> Optional[dict[int, int]]:
    if config.from_time is not None:
        instant = datetime.fromisoformat(config.from_time)
        if instant.tzinfo is None:
            raise dg.Failure("from_time needs a zone, e.g. 2026-12-01T00:00:00+00:00", allow_retries=False)
        return kafka.offsets_for_timestamp(topic, int(instant.timestamp() * 1000), kafka.connection.request_timeout_s)
    if config.from_offset is not None:
        states = kafka.partition_states(topic, kafka.connection.request_timeout_s)
        return {p: config.from_offset for p in states}
    return None


@dg.job(description=__doc__)
def cdc_backfill_job() -> None:
    cdc_backfill()
