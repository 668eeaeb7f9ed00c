"""Delta Lake tables as a Dagster resource: a local path by default, ``az://``/``abfss://`` in Azure.

Reads go through polars on a pinned ``DeltaTable`` snapshot, and writes commit against that
same snapshot, so delta-rs' conflict checker sees every concurrent writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import dagster as dg
import polars as pl
import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError
from pydantic import PrivateAttr
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from pipeline_defs.lib.settings import StorageSettings

AZURE_STORAGE_SCOPE = "https://storage.azure.com/.default"

# A commit another writer beat to the next version is tried again on the new snapshot; the
# decorated attempt must re-read the table (update_incremental) and redo only what is missing.
retry_on_commit_conflict = retry(
    retry=retry_if_exception_type(CommitFailedError),
    stop=stop_after_attempt(8),
    wait=wait_random_exponential(multiplier=0.2, max=5),
    reraise=True,
)


class DeltaLakeResource(dg.ConfigurableResource):
    """The lakehouse ``Tables`` root. ``azure_account_key`` is bound with ``dg.EnvVar`` for
    shared-key accounts (Azurite); without it, Azure identity supplies a bearer token."""

    storage: StorageSettings
    azure_account_key: Optional[str] = None

    _credential: Any = PrivateAttr(default=None)

    @property
    def is_remote(self) -> bool:
        return "://" in self.storage.lake_root and not self.storage.lake_root.startswith("file://")

    def table_uri(self, name: str) -> str:
        root = self.storage.lake_root
        if not self.is_remote:
            root = str(Path(root.removeprefix("file://")).expanduser().resolve())
        return f"{root.rstrip('/')}/{name}"

    def storage_options(self) -> dict[str, str]:
        if not self.is_remote:
            return {}
        options: dict[str, str] = {}
        if self.storage.azure_account_name:
            options["account_name"] = self.storage.azure_account_name
        if self.storage.azure_endpoint:
            options["endpoint"] = self.storage.azure_endpoint
            if self.storage.azure_endpoint.startswith("http://"):
                options["allow_http"] = "true"
        if "onelake.dfs.fabric.microsoft.com" in self.storage.lake_root:
            options["use_fabric_endpoint"] = "true"
        if self.azure_account_key:
            options["account_key"] = self.azure_account_key
        else:
            options["bearer_token"] = self._bearer_token()
        return options

    def _bearer_token(self) -> str:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return self._credential.get_token(AZURE_STORAGE_SCOPE).token

    def load(self, name: str) -> Optional[DeltaTable]:
        """The table's latest snapshot, or ``None`` if it does not exist yet."""
        uri, options = self.table_uri(name), self.storage_options()
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        return DeltaTable(uri, storage_options=options)

    def ensure(self, name: str, schema: pa.Schema, partition_by: list[str]) -> DeltaTable:
        """The table, created empty first if needed, so every write has a snapshot to
        commit against (and so conflicts with concurrent writers are detected)."""
        return DeltaTable.create(
            self.table_uri(name),
            schema,
            mode="ignore",
            partition_by=partition_by,
            storage_options=self.storage_options(),
        )

    def scan(self, name: str) -> Optional[pl.LazyFrame]:
        table = self.load(name)
        return None if table is None else scan_snapshot(table)


def as_frame(rows: pa.Table) -> pl.DataFrame:
    """An Arrow table as a polars frame (a table always converts to a frame)."""
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    return frame


def scan_snapshot(table: DeltaTable) -> pl.LazyFrame:
    """A polars scan pinned to ``table``'s version."""
    return pl.scan_delta(table)
