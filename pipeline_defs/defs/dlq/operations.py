"""Replay, resolve and purge as Launchpad jobs with typed config, over every registered DLQ
view; every run is audited."""

from collections.abc import Mapping
from dataclasses import replace
from enum import Enum
from typing import Any, Optional

import dagster as dg
from pydantic import Field, field_validator

from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.dlq.operations import (
    AUDIT_TABLE,
    MAX_SELECTION,
    DlqFilter,
    Operation,
    OperationResult,
    RefusedOperation,
    parse_moment,
    purge,
    replay,
    resolve,
)
from pipeline_defs.lib.dlq.views import STATUSES, WAITING, DlqViewSpec

# Run tags that say who or what launched a run, most specific first. OSS Dagster has no user
# identity: a Launchpad run is only marked as coming from the UI, so operators name themselves.
_LAUNCHERS = (
    ("dagster/user", "user:{}"),
    ("user", "user:{}"),
    ("dagster/schedule_name", "schedule:{}"),
    ("dagster/sensor_name", "sensor:{}"),
    ("dagster/backfill", "backfill:{}"),
    ("dagster/from_ui", "ui"),
)


def launched_by(operator: str, tags: Mapping[str, str]) -> str:
    """The operator's own name when given, else where the run came from."""
    origin = next((label.format(tags[tag]) for tag, label in _LAUNCHERS if tags.get(tag)), "unknown")
    return f"{operator} ({origin})" if operator else origin


def operation_jobs(views: Mapping[str, DlqViewSpec]) -> list[dg.JobDefinition]:
    """The replay, resolve and purge jobs; the Launchpad offers ``views`` by name."""
    DlqName = Enum("DlqName", {name: name for name in views})  # type: ignore[misc]  # noqa: N806 - a type

    class DlqSelection(dg.Config):
        dlq: DlqName = Field(description="Which DLQ view")
        ids: list[str] = Field(default=[], description="Entry ids or item ids (trace_id, event_id, media_id); empty: any")
        error_category: Optional[str] = Field(
            default=None, description="transient, permanent, auth, circuit_open, malformed, invalid"
        )
        seen_after: Optional[str] = Field(default=None, description="ISO time with zone: last seen at or after")
        seen_before: Optional[str] = Field(default=None, description="ISO time with zone: last seen before")
        statuses: list[str] = Field(default=[WAITING], description=f"Entry statuses to act on: {', '.join(STATUSES)}")
        max_count: int = Field(default=100, ge=1, le=MAX_SELECTION, description="At most this many entries, oldest first")
        reason: str = Field(default="", description="Why; recorded in the view and the audit")
        operator: str = Field(default="", description="Who is doing this (recorded in the audit)")

        @field_validator("seen_after", "seen_before")
        @classmethod
        def _zoned(cls, value: Optional[str]) -> Optional[str]:
            if value is not None:
                parse_moment(value)
            return value

        @field_validator("statuses")
        @classmethod
        def _known(cls, value: list[str]) -> list[str]:
            unknown = sorted(set(value) - set(STATUSES))
            if unknown:
                raise ValueError(f"unknown statuses {unknown}; use {', '.join(STATUSES)}")
            return value

        def filters(self) -> DlqFilter:
            return DlqFilter(
                ids=tuple(self.ids),
                error_category=self.error_category,
                seen_after=parse_moment(self.seen_after) if self.seen_after else None,
                seen_before=parse_moment(self.seen_before) if self.seen_before else None,
                statuses=tuple(self.statuses),
                max_count=self.max_count,
            )

    class ReplayConfig(DlqSelection):
        dry_run: bool = Field(default=True, description="List what would be replayed; change nothing")
        corrected_value: Optional[str] = Field(
            default=None, description="Replay the one selected entry with this value instead (a corrected record, UTF-8)"
        )

    class ResolveConfig(DlqSelection):
        dry_run: bool = Field(default=False, description="List what would be resolved; change nothing")

    class PurgeConfig(DlqSelection):
        confirm: bool = Field(default=False, description="Must be true: purge removes entries from the view")
        dry_run: bool = Field(default=False, description="List what would be purged; change nothing")

    def _operation(context: dg.OpExecutionContext, name: str, config: DlqSelection, dry_run: bool) -> Operation:
        return Operation(
            name=name,
            dlq=config.dlq.value,
            filters=config.filters(),
            reason=config.reason,
            run_id=context.run.run_id,
            launched_by=launched_by(config.operator, context.run.tags),
            dry_run=dry_run,
            operation_id=context.run.tags.get("dagster/root_run_id", context.run.run_id),
        )

    def _report(context: dg.OpExecutionContext, result: OperationResult) -> None:
        op = result.operation
        context.log.info(f"{op.name} on {op.dlq}: {len(result.entry_ids)} entries, {result.outcome}")
        metadata: dict[str, Any] = {
            "operation": op.name,
            "outcome": result.outcome,
            "entries": len(result.entry_ids),
            "entry_ids": dg.MetadataValue.json(result.entry_ids[:50]),
            "replayed_to": dg.MetadataValue.json(result.replayed_to),
        }
        context.log_event(dg.AssetMaterialization(asset_key=AUDIT_TABLE, metadata=metadata))
        if result.outcome == "applied" and result.entry_ids:
            context.log_event(dg.AssetMaterialization(asset_key=views[op.dlq].table, metadata=metadata))

    topic_keys = {key for spec in views.values() for key in spec.resource_keys}

    @dg.op(
        description="Replay matching DLQ entries to their pending path, retry count reset; dry run by default.",
        required_resource_keys={"kafka", "source_kafka", "lake", "files", *topic_keys},
    )
    def replay_dlq_entries(context: dg.OpExecutionContext, config: ReplayConfig) -> None:
        resources: Any = context.resources
        operation = _operation(context, "replay", config, config.dry_run)
        if config.corrected_value is not None:
            operation = replace(operation, corrected_value=config.corrected_value.encode())
        clusters = {"kafka": resources.kafka, "source_kafka": resources.source_kafka}
        try:
            _report(context, replay(resources.lake, clusters, resources.files, resources, views[operation.dlq], operation))
        except RefusedOperation as refused:
            raise dg.Failure(description=str(refused)) from None

    @dg.op(description="Mark matching DLQ entries handled, with a reason, without replaying them.")
    def resolve_dlq_entries(context: dg.OpExecutionContext, config: ResolveConfig, lake: DeltaLakeResource) -> None:
        operation = _operation(context, "resolve", config, config.dry_run)
        try:
            _report(context, resolve(lake, views[operation.dlq], operation))
        except RefusedOperation as refused:
            raise dg.Failure(description=str(refused)) from None

    @dg.op(description="Remove matching entries from a DLQ view; refused unless confirm is true.")
    def purge_dlq_entries(context: dg.OpExecutionContext, config: PurgeConfig, lake: DeltaLakeResource) -> None:
        operation = _operation(context, "purge", config, config.dry_run)
        try:
            _report(context, purge(lake, views[operation.dlq], operation, confirmed=config.confirm))
        except RefusedOperation as refused:
            raise dg.Failure(description=str(refused)) from None

    @dg.job(description="Replay DLQ entries (Launchpad: pick the DLQ and filters; dry_run defaults to true).")
    def dlq_replay_job() -> None:
        replay_dlq_entries()

    @dg.job(description="Resolve DLQ entries with a reason.")
    def dlq_resolve_job() -> None:
        resolve_dlq_entries()

    @dg.job(description="Purge DLQ entries from their view (needs confirm: true).")
    def dlq_purge_job() -> None:
        purge_dlq_entries()

    return [dlq_replay_job, dlq_resolve_job, dlq_purge_job]
