"""The maintenance domain: every Delta table the other domains register (each asset of kind
``deltalake`` is the table of the same name) compacted, checkpointed and vacuumed on a
schedule, one step per table, with files and bytes before and after as observations of the
table's asset, so the UI plots how each table lies in files."""

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from pipeline_defs.defs.maintenance.settings import MaintenanceResource, MaintenanceSettings
from pipeline_defs.lib.delta.maintenance import maintain
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.domains import Domain
from pipeline_defs.lib.settings import CoreSettings, section


def delta_tables(domains: Sequence[Domain]) -> list[str]:
    specs = [
        spec
        for domain in domains
        for assets in domain.defs.assets or []
        for spec in (assets.specs if isinstance(assets, dg.AssetsDefinition) else [assets])
    ]
    return sorted({spec.key.to_user_string() for spec in specs if isinstance(spec, dg.AssetSpec) and "deltalake" in spec.kinds})


def _maintain_op(table: str) -> dg.OpDefinition:
    @dg.op(name=f"maintain_{table}", required_resource_keys={"lake", "delta_maintenance"}, out={})
    def _op(context: dg.OpExecutionContext) -> Iterator[dg.AssetObservation]:
        lake: DeltaLakeResource = context.resources.lake
        settings: MaintenanceSettings = context.resources.delta_maintenance.settings
        loaded = lake.load(table)
        if loaded is None:
            context.log.info(f"{table} does not exist yet")
            return
        done = maintain(
            loaded,
            target_size_bytes=settings.target_file_mb * 2**20,
            retention_hours=settings.vacuum_retention_hours,
            commit_interval_s=settings.commit_interval_s,
        )
        yield dg.AssetObservation(
            asset_key=table,
            metadata={
                "files_before": done.before.files,
                "files_after": done.after.files,
                "bytes_before": done.before.bytes,
                "bytes_after": done.after.bytes,
                "max_files_per_partition_before": done.before.max_files_per_partition,
                "max_files_per_partition_after": done.after.max_files_per_partition,
                "files_compacted": done.files_compacted,
                "files_written": done.files_written,
                "files_vacuumed": done.files_vacuumed,
                "delta_version": done.version,
                "seconds": done.seconds,
            },
        )

    return _op


def maintenance_domain(domains: Sequence[Domain]) -> Domain:
    tables = delta_tables(domains)
    ops = [_maintain_op(table) for table in tables]

    @dg.job(
        name="delta_maintenance_job",
        executor_def=dg.in_process_executor,  # one table after another: maintenance yields to the pipeline
        description=f"Compact, checkpoint and vacuum each Delta table ({len(tables)}); select steps to do some.",
    )
    def delta_maintenance_job() -> None:
        for op in ops:
            op()

    def _resources(settings: CoreSettings) -> Mapping[str, Any]:
        return {"delta_maintenance": MaintenanceResource(settings=section(settings, "maintenance", MaintenanceSettings))}

    return Domain(
        name="maintenance",
        defs=dg.Definitions(jobs=[delta_maintenance_job], schedules=[_schedule(delta_maintenance_job)]),
        settings=MaintenanceSettings,
        resources=_resources,
    )


def _schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    # Hourly: streaming adds up to two small files a second per table, and an hour of them
    # compacts in seconds.
    return dg.ScheduleDefinition(
        name="delta_maintenance_schedule",
        job=job,
        cron_schedule="17 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Compacts, checkpoints and vacuums every Delta table, hourly.",
    )
