"""Data-quality checks of the ClaimX assets, evaluated by the runs that write them."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import polars as pl

from pipeline_defs.defs.claimx.enrichment import ENRICHMENT_LOG
from pipeline_defs.defs.claimx.entities import ENTITY_TABLES, MEDIA, PROJECTS, TASK_TEMPLATES, TASKS
from pipeline_defs.lib.delta.checks import RunScope, event_log_check_specs, inventory_check_specs
from pipeline_defs.lib.delta.entities import dangling_references, duplicate_keys
from pipeline_defs.lib.delta.resource import DeltaLakeResource

REQUIRED_EVENT_COLUMNS = ["event_id", "event_type", "project_id", "event_ingested_at"]

claimx_events_check_specs = event_log_check_specs("claimx_events", "event_id_unique", REQUIRED_EVENT_COLUMNS)
claimx_attachments_check_specs = inventory_check_specs("claimx_attachments")

entity_check_specs = [
    *(
        dg.AssetCheckSpec(
            "merge_keys_unique",
            asset=table.name,
            blocking=True,
            description=f"Each ({', '.join(table.keys)}) a run wrote appears once: one latest row per entity.",
        )
        for table in ENTITY_TABLES
    ),
    dg.AssetCheckSpec(
        "project_exists", asset=MEDIA.name, description="Every media row a run wrote has its project in claimx_projects."
    ),
    dg.AssetCheckSpec(
        "template_known",
        asset=TASKS.name,
        description="WARN when a task a run wrote names a template claimx_task_templates lacks.",
    ),
]


def entity_rows_of(lake: DeltaLakeResource, scope: RunScope) -> pl.Expr:
    """The entity rows a run answers for: those it wrote, and those of the events of its
    ranges (written by an earlier run of the same ranges)."""
    log = lake.scan(ENRICHMENT_LOG)
    events = [] if log is None else log.filter(scope.predicate()).select("event_id").collect()["event_id"].to_list()
    return (pl.col("dagster_run_id") == scope.run_id) | pl.col("source_event_id").is_in(events)


def entity_checks(lake: DeltaLakeResource, scope: RunScope) -> Iterator[dg.AssetCheckResult]:
    """On the rows the run answers for: the rest of each table was checked by the run that wrote it."""
    written = entity_rows_of(lake, scope)
    for table in ENTITY_TABLES:
        duplicated, sample = duplicate_keys(lake, table, written)
        yield dg.AssetCheckResult(
            asset_key=table.name,
            check_name="merge_keys_unique",
            passed=duplicated == 0,
            metadata={"duplicated_keys": duplicated, "sample": dg.MetadataValue.json(sample)},
        )
    orphans, sample = dangling_references(lake, MEDIA, PROJECTS, ["project_id"], written)
    yield dg.AssetCheckResult(
        asset_key=MEDIA.name,
        check_name="project_exists",
        passed=orphans == 0,
        metadata={"media_without_project": orphans, "sample": dg.MetadataValue.json(sample)},
    )
    unknown, sample = dangling_references(lake, TASKS, TASK_TEMPLATES, ["template_id", "project_id"], written)
    yield dg.AssetCheckResult(
        asset_key=TASKS.name,
        check_name="template_known",
        passed=unknown == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"tasks_with_unknown_template": unknown, "sample": dg.MetadataValue.json(sample)},
    )
