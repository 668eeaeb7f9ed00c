"""Latest-state entity merges on real Delta tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable

from pipeline_defs.lib.delta.entities import EntityTable, MergeStats, dangling_references, duplicate_keys, merge_entities
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs_tests.support.kafka import table_rows

PEOPLE = EntityTable(
    name="people",
    keys=("person_id",),
    columns=pa.schema([pa.field("person_id", pa.string(), nullable=False), pa.field("name", pa.string())]),
)
PETS = EntityTable(
    name="pets",
    keys=("pet_id",),
    columns=pa.schema([pa.field("pet_id", pa.string(), nullable=False), pa.field("person_id", pa.string())]),
)


def merge(lake: DeltaLakeResource, table: EntityTable, rows: list[dict], run_id: str) -> MergeStats:
    return merge_entities(lake.ensure(table.name, table.schema, []), table, rows, run_id)


def test_new_keys_are_inserted_changed_rows_updated_equal_rows_left_alone(lake):
    first = merge(lake, PEOPLE, [{"person_id": "1", "name": "Ann"}, {"person_id": "2", "name": "Bo"}], "run-1")
    assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)

    second = merge(
        lake,
        PEOPLE,
        [{"person_id": "1", "name": "Ann"}, {"person_id": "2", "name": "Bob"}, {"person_id": "3", "name": "Cy"}],
        "run-2",
    )

    assert (second.inserted, second.updated, second.unchanged) == (1, 1, 1)
    rows = {r["person_id"]: r for r in table_rows(lake, "people").to_dicts()}
    assert {k: r["name"] for k, r in rows.items()} == {"1": "Ann", "2": "Bob", "3": "Cy"}
    assert rows["1"]["dagster_run_id"] == "run-1" and rows["2"]["dagster_run_id"] == "run-2"


def test_within_a_batch_the_last_row_of_a_key_wins(lake):
    merge(lake, PEOPLE, [{"person_id": "1", "name": "old"}, {"person_id": "1", "name": "new"}], "run")

    assert table_rows(lake, "people")["name"].to_list() == ["new"]


def test_a_column_added_to_the_schema_later_is_added_to_the_table(lake):
    merge(lake, PEOPLE, [{"person_id": "1", "name": "Ann"}], "run-1")
    grown = EntityTable(PEOPLE.name, PEOPLE.keys, PEOPLE.columns.append(pa.field("email", pa.string())))

    merge(lake, grown, [{"person_id": "2", "name": "Bo", "email": "bo@example.com"}], "run-2")

    rows = {r["person_id"]: r for r in table_rows(lake, "people").to_dicts()}
    assert rows["2"]["email"] == "bo@example.com" and rows["1"]["email"] is None


def test_a_merge_that_loses_the_commit_race_is_retried_against_the_new_snapshot(lake, monkeypatch):
    merge(lake, PEOPLE, [{"person_id": "1", "name": "Ann"}], "run-1")
    refresh = DeltaTable.update_incremental
    raced: list[int] = []

    def refresh_then_lose_the_race(table: DeltaTable) -> None:
        refresh(table)
        if not raced:  # another writer commits between our snapshot and our merge
            raced.append(True)
            merge(lake, PEOPLE, [{"person_id": "1", "name": "Ann B."}], "run-2")

    monkeypatch.setattr(DeltaTable, "update_incremental", refresh_then_lose_the_race)
    stats = merge(lake, PEOPLE, [{"person_id": "2", "name": "Bo"}], "run-3")

    assert stats.conflicts == 1 and stats.inserted == 1
    assert dict(table_rows(lake, "people").select("person_id", "name").iter_rows()) == {"1": "Ann B.", "2": "Bo"}


def test_duplicate_keys_and_dangling_references_are_found(lake):
    merge(lake, PEOPLE, [{"person_id": "1", "name": "Ann"}], "run")
    merge(
        lake,
        PETS,
        [{"pet_id": "p1", "person_id": "1"}, {"pet_id": "p2", "person_id": "9"}, {"pet_id": "p3", "person_id": None}],
        "run",
    )

    by_run = pl.col("dagster_run_id") == "run"
    assert duplicate_keys(lake, PEOPLE, by_run) == (0, [])
    assert dangling_references(lake, PETS, PEOPLE, ["person_id"], by_run) == (1, [{"person_id": "9"}])
    assert dangling_references(lake, PETS, PEOPLE, ["person_id"], pl.col("dagster_run_id") == "another run") == (0, [])


def test_an_older_answer_never_replaces_a_newer_one(lake):
    now = datetime.now(UTC)
    merge(lake, PEOPLE, [{"person_id": "1", "name": "renamed", "fetched_at": now}], "fast-run")

    stale = merge(lake, PEOPLE, [{"person_id": "1", "name": "original", "fetched_at": now - timedelta(seconds=5)}], "slow-run")

    assert stale.updated == 0 and table_rows(lake, "people")["name"].to_list() == ["renamed"]
