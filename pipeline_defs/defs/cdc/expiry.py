"""``cdc_expiry_job``: TTL'd rows purged and old tombstones dropped in every replicated table
(``lib/cdc/expiry``), one step per table, on an hourly schedule; what each step did is an
observation of the table's asset, so the UI plots it beside the replication runs."""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from pipeline_defs.defs.cdc.assets import asset_name
from pipeline_defs.defs.cdc.settings import CdcSettings
from pipeline_defs.lib.cdc.expiry import expire
from pipeline_defs.lib.cdc.model import TableSpec

EXPIRY_CRON = "17 * * * *"


def _expiry_op(spec: TableSpec) -> dg.OpDefinition:
    @dg.op(name=f"expire_{spec.pg_table}", required_resource_keys={"cdc", "cdc_postgres"}, out={})
    def _op(context: dg.OpExecutionContext) -> Iterator[dg.AssetObservation]:
        resources: Any = context.resources
        settings: CdcSettings = resources.cdc.settings
        with resources.cdc_postgres.connect(autocommit=True) as conn:
            done = expire(
                conn,
                spec,
                settings.pg_schema,
                soft_delete=settings.delete_mode == "soft",
                tombstone_grace_days=settings.tombstone_grace_days,
            )
        yield dg.AssetObservation(
            asset_key=asset_name(spec),
            metadata={
                "rows_expired": done.rows_expired,
                "tombstones_dropped": done.tombstones_dropped,
                "expiry_seconds": dg.FloatMetadataValue(done.seconds),
            },
        )

    return _op


def expiry_definitions(specs: Sequence[TableSpec]) -> dg.Definitions:
    if not specs:
        return dg.Definitions()
    ops = [_expiry_op(spec) for spec in specs]

    @dg.graph(name="cdc_expiry")
    def _graph() -> None:
        for op in ops:
            op()

    job = _graph.to_job(
        name="cdc_expiry_job",
        description="Purge rows whose Cassandra TTL has passed and drop tombstones older than cdc.tombstone_grace_days",
    )
    schedule = dg.ScheduleDefinition(
        name="cdc_expiry_schedule",
        job=job,
        cron_schedule=EXPIRY_CRON,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"TTL expiry and tombstone cleanup of the replicated tables ({EXPIRY_CRON})",
    )
    return dg.Definitions(jobs=[job], schedules=[schedule])
