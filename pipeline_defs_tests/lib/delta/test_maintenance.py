"""Table maintenance on real Delta tables: small files compacted, watermarks kept, vacuum, and
a writer committing micro-batches all the while."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from pipeline_defs.defs.maintenance import maintenance_domain
from pipeline_defs.defs.maintenance.settings import MaintenanceResource, MaintenanceSettings
from pipeline_defs.domains import DATA_DOMAINS, DLQ_DOMAIN
from pipeline_defs.lib.delta.maintenance import Layout, maintain
from pipeline_defs.lib.delta.resource import DeltaLakeResource, retry_on_commit_conflict
from pipeline_defs.lib.settings import StorageSettings

DAYS = [date(2026, 11, 30), date(2026, 12, 1)]
WATERMARK = "kafka:group:events.raw:0"


def micro_batch(path: str, batch: int, rows: int = 20) -> None:
    """What a streaming run commits: a few rows and its partition's watermark, in one commit."""

    schema = pa.schema([("trace_id", pa.string()), ("ingestion_date", pa.date32())])

    @retry_on_commit_conflict
    def attempt() -> None:
        table = DeltaTable.create(path, schema, mode="ignore", partition_by=["ingestion_date"])
        mark = table.transaction_version(WATERMARK) or 0
        if mark > batch:
            return  # committed by an earlier attempt
        data = pa.table(
            {
                "trace_id": [f"t{batch}-{i}" for i in range(rows)],
                "ingestion_date": pa.array([DAYS[batch % 2]] * rows, pa.date32()),
            },
            schema=schema,
        )
        commit = CommitProperties(app_transactions=[Transaction(WATERMARK, batch + 1)])
        write_deltalake(table, data, mode="append", partition_by=["ingestion_date"], commit_properties=commit)

    attempt()


def test_small_files_are_compacted_per_day_and_the_watermarks_survive(tmp_path: Path):
    path = str(tmp_path / "xact_events")
    for batch in range(60):
        micro_batch(path, batch)
    table = DeltaTable(path)
    assert Layout.of(table).max_files_per_partition == 30

    done = maintain(table, target_size_bytes=64 * 2**20, retention_hours=0, commit_interval_s=60)

    assert (done.before.files, done.after.files, done.after.max_files_per_partition) == (60, 2, 1)
    assert done.files_compacted == 60 and done.files_written == 2 and done.files_vacuumed == 60
    assert DeltaTable(path).transaction_version(WATERMARK) == 60
    rows = pl.scan_delta(path).collect()
    assert rows.height == 1200 and rows["trace_id"].n_unique() == 1200
    assert len(list((tmp_path / "xact_events").glob("ingestion_date=*/*.parquet"))) == 2  # vacuumed on disk too
    assert list((tmp_path / "xact_events" / "_delta_log").glob("*.checkpoint.parquet"))


def test_a_writer_committing_all_along_loses_nothing_and_doubles_nothing(tmp_path: Path):
    path = str(tmp_path / "xact_events")
    for batch in range(40):
        micro_batch(path, batch)
    writer_done = threading.Event()

    def keep_writing() -> None:
        for batch in range(40, 140):
            micro_batch(path, batch)
        writer_done.set()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    while not writer_done.is_set():
        maintain(DeltaTable(path), target_size_bytes=64 * 2**20, retention_hours=0, commit_interval_s=60)
    writer.join()
    maintain(DeltaTable(path), target_size_bytes=64 * 2**20, retention_hours=0, commit_interval_s=60)

    rows = pl.scan_delta(path).collect()
    assert rows.height == 140 * 20 and rows["trace_id"].n_unique() == 140 * 20
    assert DeltaTable(path).transaction_version(WATERMARK) == 140
    assert Layout.of(DeltaTable(path)).max_files_per_partition == 1


def test_the_maintenance_job_reports_each_table_as_an_observation(tmp_path: Path):
    lake = DeltaLakeResource(storage=StorageSettings(lake_root=str(tmp_path)))
    for batch in range(10):
        micro_batch(lake.table_uri("xact_events"), batch)
    domain = maintenance_domain((*DATA_DOMAINS, DLQ_DOMAIN))
    defs = dg.Definitions.merge(
        domain.defs,
        dg.Definitions(
            resources={
                "lake": lake,
                "delta_maintenance": MaintenanceResource(settings=MaintenanceSettings(vacuum_retention_hours=0)),
            }
        ),
    )

    result = defs.get_job_def("delta_maintenance_job").execute_in_process()

    assert result.success  # tables that do not exist yet are skipped
    observed = {
        observation.asset_key.to_user_string(): {k: v.value for k, v in observation.metadata.items()}
        for node in result.job_def.nodes_in_topological_order
        for observation in result.asset_observations_for_node(node.name)
    }
    assert set(observed) == {"xact_events"}
    assert observed["xact_events"]["files_before"] == 10 and observed["xact_events"]["files_after"] == 2
