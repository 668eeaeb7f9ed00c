"""Data-quality checks on the rows a run answers for, read back from Delta after the commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import dagster as dg
import polars as pl

from pipeline_defs.lib.attachments.file_store import FileStoreResource
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.ingest.failures import FAILURE_COUNTERS
from pipeline_defs.lib.ingest.sink import PARTITION_COLUMN, BatchContext, IngestMode, IngestReport, dedup_window
from pipeline_defs.lib.kafka.ranges import OffsetRange


@dataclass(frozen=True)
class RunScope:
    """The rows a run answers for: those it wrote, and those of its planned offset ranges
    whichever run wrote them, so a failed run re-executed under a new id (which writes
    nothing new) is checked on its predecessor's rows, not on none."""

    run_id: Optional[str]  # None: a streaming run answers only for the ranges of one interval
    ranges: tuple[OffsetRange, ...] = ()

    def predicate(self) -> pl.Expr:
        in_ranges = [
            (pl.col("kafka_topic") == r.topic)
            & (pl.col("kafka_partition") == r.partition)
            & pl.col("kafka_offset").is_between(r.start, r.end, closed="left")
            for r in self.ranges
        ]
        by_run = [] if self.run_id is None else [pl.col("dagster_run_id") == self.run_id]
        return pl.any_horizontal([*by_run, *in_ranges]) if by_run or in_ranges else pl.lit(False)


def written_by(run: BatchContext, ranges: Sequence[OffsetRange]) -> RunScope:
    return RunScope(run.run_id, tuple(ranges) if run.mode is IngestMode.STREAM else ())


def _rows_of_run(lake: DeltaLakeResource, table: str, scope: RunScope) -> pl.LazyFrame | None:
    scan = lake.scan(table)
    return None if scan is None else scan.filter(scope.predicate())


def keys_unique(
    lake: DeltaLakeResource,
    table: str,
    key_columns: Sequence[str],
    scope: RunScope,
    window_days: int,
    check_name: str,
) -> dg.AssetCheckResult:
    """Every key the run answers for appears once within the dedup window around its partition."""
    scan = lake.scan(table)
    if scan is None:
        return dg.AssetCheckResult(check_name=check_name, passed=True, metadata={"keys_checked": 0})
    keys = list(key_columns)
    written = scan.filter(scope.predicate()).select([*keys, PARTITION_COLUMN]).unique().collect()
    days = sorted({d for day in written[PARTITION_COLUMN].unique() for d in dedup_window(day, window_days)})
    counts = (
        scan.filter(pl.col(PARTITION_COLUMN).is_in(days))
        .join(written.lazy().select(keys).unique(), on=keys, how="semi")
        .group_by(keys)
        .len()
        .collect()
    )
    duplicated = counts.filter(pl.col("len") > 1)
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=duplicated.height == 0,
        metadata={
            "keys_checked": counts.height,
            "duplicated_keys": duplicated.height,
            "sample": dg.MetadataValue.json(duplicated.head(5).select(keys).to_dicts()),
        },
    )


def required_present(
    lake: DeltaLakeResource, table: str, columns: Sequence[str], scope: RunScope, check_name: str
) -> dg.AssetCheckResult:
    """No required column is null or empty in the rows the run answers for."""
    rows = _rows_of_run(lake, table, scope)
    if rows is None:
        return dg.AssetCheckResult(check_name=check_name, passed=True, metadata={"rows_checked": 0})
    missing = (
        rows.select(
            pl.len().alias("rows"),
            *[(pl.col(c).is_null() | (pl.col(c).cast(pl.String) == "")).sum().alias(c) for c in columns],
        )
        .collect()
        .row(0, named=True)
    )
    missing_by_column = {c: missing[c] for c in columns if missing[c]}
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not missing_by_column,
        metadata={
            "rows_checked": missing["rows"],
            "missing_by_column": dg.MetadataValue.json(missing_by_column),
        },
    )


def event_log_check_specs(asset: str, key_check: str, required: Sequence[str]) -> list[dg.AssetCheckSpec]:
    """Blocking: a failure fails the run, and the sensors of the tasks this event log hands on
    (``gated_by`` in lib/ingest/sensors.py) plan nothing until a later run passes."""
    return [
        dg.AssetCheckSpec(
            key_check,
            asset=asset,
            blocking=True,
            description="Each key the run wrote appears once within the deduplication window.",
        ),
        dg.AssetCheckSpec(
            "required_fields_present",
            asset=asset,
            blocking=True,
            description=f"{', '.join(required)} are never empty.",
        ),
    ]


def event_log_checks(
    lake: DeltaLakeResource,
    table: str,
    key_columns: Sequence[str],
    required: Sequence[str],
    scope: RunScope,
    window_days: int,
    key_check: str,
) -> list[dg.AssetCheckResult]:
    """Read back what the run committed; run inside the asset so a failure blocks downstream."""
    return [
        keys_unique(lake, table, key_columns, scope, window_days, key_check),
        required_present(lake, table, required, scope, "required_fields_present"),
    ]


def blobs_match_inventory(
    lake: DeltaLakeResource,
    files: FileStoreResource,
    table: str,
    scope: RunScope,
    check_name: str,
    sample_size: int = 20,
) -> dg.AssetCheckResult:
    """For a sample of the rows the run answers for, the blob exists with the recorded size."""
    rows = _rows_of_run(lake, table, scope)
    sample = [] if rows is None else rows.select("blob_path", "size_bytes").head(sample_size).collect().rows()

    async def stored_sizes() -> list[int | None]:
        async with files.open() as store:
            return [await store.size_of(path) for path, _ in sample]

    sizes = asyncio.run(stored_sizes()) if sample else []
    mismatched = [path for (path, recorded), stored in zip(sample, sizes) if stored != recorded]
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not mismatched,
        metadata={"blobs_checked": len(sample), "missing_or_wrong_size": dg.MetadataValue.json(mismatched[:5])},
    )


def failure_ratio(report: IngestReport, threshold: float, check_name: str) -> dg.AssetCheckResult:
    """WARN when more than ``threshold`` of this run's download attempts failed."""
    failures = sum(report.counts[c] for c in FAILURE_COUNTERS.values())
    attempts = failures + report.counts["files_stored"]
    ratio = failures / attempts if attempts else 0.0
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=ratio <= threshold,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"failed_ratio": round(ratio, 4), "attempts": attempts, "failures": failures, "threshold": threshold},
    )


def inventory_check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    """The checks every attachment inventory carries."""
    return [
        dg.AssetCheckSpec(
            "inventory_key_unique",
            asset=asset,
            blocking=True,
            description="Each attachment the run recorded appears once in the inventory.",
        ),
        dg.AssetCheckSpec(
            "blobs_exist_with_recorded_size",
            asset=asset,
            description="For a sample of the run's rows, the blob exists in OneLake with the recorded size.",
        ),
        dg.AssetCheckSpec(
            "failed_attachment_ratio",
            asset=asset,
            description="WARN when too many of the run's download attempts failed.",
        ),
    ]


def inventory_checks(
    table: str,
    key_columns: Sequence[str],
    lake: DeltaLakeResource,
    files: FileStoreResource,
    scope: RunScope,
    report: IngestReport,
    failure_threshold: float,
) -> list[dg.AssetCheckResult]:
    return [
        keys_unique(lake, table, key_columns, scope, 1, "inventory_key_unique"),
        blobs_match_inventory(lake, files, table, scope, "blobs_exist_with_recorded_size"),
        failure_ratio(report, failure_threshold, "failed_attachment_ratio"),
    ]
