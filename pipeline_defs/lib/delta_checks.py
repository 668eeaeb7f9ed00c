"""Data-quality checks on the rows one run wrote, read back from Delta after the commit."""

from __future__ import annotations

from datetime import date
from typing import Sequence

import dagster as dg
import polars as pl

from pipeline_defs.lib.delta import DeltaLakeResource
from pipeline_defs.lib.kafka_to_delta import PARTITION_COLUMN, dedup_window


def _rows_of_run(lake: DeltaLakeResource, table: str, run_id: str) -> pl.LazyFrame | None:
    scan = lake.scan(table)
    return None if scan is None else scan.filter(pl.col("dagster_run_id") == run_id)


def keys_unique(
    lake: DeltaLakeResource,
    table: str,
    key_columns: Sequence[str],
    run_id: str,
    day: date,
    window_days: int,
    check_name: str,
) -> dg.AssetCheckResult:
    """Every key this run wrote appears once in the dedup window around ``day``."""
    scan = lake.scan(table)
    if scan is None:
        return dg.AssetCheckResult(check_name=check_name, passed=True, metadata={"keys_checked": 0})
    keys = list(key_columns)
    written = scan.filter(pl.col("dagster_run_id") == run_id).select(keys).unique()
    counts = (
        scan.filter(pl.col(PARTITION_COLUMN).is_in(dedup_window(day, window_days)))
        .join(written, on=keys, how="semi")
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
    lake: DeltaLakeResource, table: str, columns: Sequence[str], run_id: str, check_name: str
) -> dg.AssetCheckResult:
    """No required column is null or empty in the rows this run wrote."""
    rows = _rows_of_run(lake, table, run_id)
    if rows is None:
        return dg.AssetCheckResult(check_name=check_name, passed=True, metadata={"rows_checked": 0})
    missing = rows.select(
        pl.len().alias("rows"),
        *[
            (pl.col(c).is_null() | (pl.col(c).cast(pl.String) == "")).sum().alias(c)
            for c in columns
        ],
    ).collect().row(0, named=True)
    missing_by_column = {c: missing[c] for c in columns if missing[c]}
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not missing_by_column,
        metadata={
            "rows_checked": missing["rows"],
            "missing_by_column": dg.MetadataValue.json(missing_by_column),
        },
    )
