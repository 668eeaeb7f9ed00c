"""Entity tables: the latest state of each entity, MERGEd on its keys.

A row is rewritten only when its content changed (``content_hash``) and the answer it comes
from is not older than the stored one (``fetched_at``), so re-running a batch leaves the table
as it was and a slow run cannot put back a state a faster one already replaced. Columns added to a table's schema later are added to the Delta
table on the next merge (additive schema changes). Concurrent writers of one table lose
nothing: a merge that loses the commit race is retried against the new snapshot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import CommitFailedError

from pipeline_defs.lib.delta.resource import DeltaLakeResource, retry_on_commit_conflict

ENTITY_LINEAGE = pa.schema(
    [
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("source_event_id", pa.string()),
        pa.field("source_event_type", pa.string()),
        pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=False),  # when the source answered
        pa.field("merged_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("dagster_run_id", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class EntityTable:
    name: str
    keys: tuple[str, ...]
    columns: pa.Schema  # the entity's own columns, keys first

    @property
    def schema(self) -> pa.Schema:
        return pa.unify_schemas([self.columns, ENTITY_LINEAGE])


@dataclass(frozen=True)
class MergeStats:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    version: int = -1
    conflicts: int = 0  # commits lost to a concurrent writer, then retried

    def __add__(self, other: MergeStats) -> MergeStats:
        return MergeStats(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            max(self.version, other.version),
            self.conflicts + other.conflicts,
        )


def content_hash(row: dict[str, Any], columns: Sequence[str]) -> str:
    values = [row.get(c) for c in columns]
    return hashlib.sha256(json.dumps(values, default=str, separators=(",", ":")).encode()).hexdigest()


def entity_frame(table: EntityTable, rows: Sequence[dict[str, Any]], run_id: str) -> pa.Table:
    """``rows`` (entity columns plus source_event_id/type and fetched_at) as the table's rows:
    one per key, the last one winning, each with its content hash."""
    columns = table.columns.names
    now = datetime.now(UTC)
    latest: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        latest[tuple(row[k] for k in table.keys)] = {
            **{c: row.get(c) for c in columns},
            "content_hash": content_hash(row, columns),
            "source_event_id": row.get("source_event_id"),
            "source_event_type": row.get("source_event_type"),
            "fetched_at": row.get("fetched_at") or now,
            "merged_at": now,
            "dagster_run_id": run_id,
        }
    return pa.Table.from_pylist(list(latest.values()), schema=table.schema)


def merge_entities(delta: DeltaTable, table: EntityTable, rows: Sequence[dict[str, Any]], run_id: str) -> MergeStats:
    """Upsert ``rows`` into ``table`` (opened as ``delta``, brought up to date here): new keys
    inserted, changed rows replaced, equal rows left alone."""
    if not rows:
        return MergeStats()
    source = entity_frame(table, rows, run_id)
    matches = " AND ".join(f"t.{k} = s.{k}" for k in table.keys)
    conflicts = 0

    @retry_on_commit_conflict
    def attempt() -> MergeStats:
        nonlocal conflicts
        delta.update_incremental()
        merge = (
            delta.merge(
                source,
                predicate=matches,
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=CommitProperties(custom_metadata={"dagster_run_id": run_id, "writer": "entities"}),
            )
            .when_matched_update_all(
                predicate="s.content_hash <> t.content_hash AND (t.fetched_at IS NULL OR s.fetched_at >= t.fetched_at)"
            )
            .when_not_matched_insert_all()
        )
        try:
            metrics = merge.execute()
        except CommitFailedError:
            conflicts += 1
            raise
        inserted = int(metrics.get("num_target_rows_inserted", 0))
        updated = int(metrics.get("num_target_rows_updated", 0))
        return MergeStats(inserted, updated, source.num_rows - inserted - updated, delta.version(), conflicts)

    return attempt()


def duplicate_keys(lake: DeltaLakeResource, table: EntityTable, written_rows: pl.Expr) -> tuple[int, list[dict[str, Any]]]:
    """How many of the keys of the ``written_rows`` appear more than once, and a few of them."""
    scan = lake.scan(table.name)
    if scan is None:
        return 0, []
    keys = list(table.keys)
    written = scan.filter(written_rows).select(keys)
    duplicated = scan.join(written, on=keys, how="semi").group_by(keys).len().filter(pl.col("len") > 1).collect()
    return duplicated.height, duplicated.head(5).select(keys).to_dicts()


def dangling_references(
    lake: DeltaLakeResource, child: EntityTable, parent: EntityTable, columns: Sequence[str], written_rows: pl.Expr
) -> tuple[int, list[dict[str, Any]]]:
    """The ``written_rows`` of ``child`` whose ``columns`` name no row of ``parent`` (null
    references excluded)."""
    children, parents = lake.scan(child.name), lake.scan(parent.name)
    if children is None:
        return 0, []
    keys = list(columns)
    referencing = children.filter(written_rows & pl.all_horizontal(pl.col(c).is_not_null() for c in keys)).select(keys)
    if parents is not None:
        referencing = referencing.join(parents.select(keys).unique(), on=keys, how="anti")
    dangling = referencing.unique().collect()
    return dangling.height, dangling.head(5).to_dicts()
