"""Table maintenance: small files compacted, a checkpoint written, unreferenced files vacuumed.

Micro-batches (and many small batch runs) leave many small files per day partition; readers pay
for each one. Compaction rewrites them into files of ``target_size``. It commits without
touching the app transactions (the watermarks live on in the log's state and every
checkpoint), and it conflicts with a live writer only when both touch the same files: an
append never does; a MERGE that read a file being compacted does, and then whichever commits
second retries on the new snapshot (the writers' ``commit_batch``, this module's compaction).
Vacuum deletes only files unreferenced for longer than ``retention_hours``, so a reader on an
older snapshot (a long run, a query in Fabric) keeps its files.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa
from deltalake import DeltaTable

from pipeline_defs.lib.delta.resource import retry_on_commit_conflict

# Delta's own default (delta.deletedFileRetentionDuration): shorter can break time travel and
# readers in flight, so it must be asked for explicitly.
SAFE_RETENTION_HOURS = 168


@dataclass(frozen=True)
class Layout:
    """How a table's current snapshot lies in files."""

    files: int
    bytes: int
    max_files_per_partition: int

    @classmethod
    def of(cls, table: DeltaTable) -> Layout:
        actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
        sizes = actions.get("size_bytes", [])
        partition_columns = sorted(k for k in actions if k.startswith("partition."))
        partitions = Counter(zip(*(actions[k] for k in partition_columns))) if partition_columns else Counter({(): len(sizes)})
        return cls(len(sizes), int(sum(sizes)), max(partitions.values(), default=0))


@dataclass(frozen=True)
class Maintained:
    before: Layout
    after: Layout
    files_compacted: int  # small files rewritten ...
    files_written: int  # ... into these
    files_vacuumed: int
    version: int
    seconds: float


def maintain(table: DeltaTable, *, target_size_bytes: int, retention_hours: int, commit_interval_s: float) -> Maintained:
    """Compact, checkpoint and vacuum ``table``; compaction retries on conflicts with writers."""
    started = time.monotonic()
    before = Layout.of(table)

    @retry_on_commit_conflict
    def compact() -> dict:
        table.update_incremental()
        return table.optimize.compact(target_size=target_size_bytes, min_commit_interval=timedelta(seconds=commit_interval_s))

    metrics = compact()
    table.update_incremental()
    table.create_checkpoint()
    vacuumed = table.vacuum(
        retention_hours=retention_hours, dry_run=False, enforce_retention_duration=retention_hours >= SAFE_RETENTION_HOURS
    )
    table.cleanup_metadata()
    table.update_incremental()
    return Maintained(
        before=before,
        after=Layout.of(table),
        files_compacted=int(metrics.get("numFilesRemoved", 0)),
        files_written=int(metrics.get("numFilesAdded", 0)),
        files_vacuumed=len(vacuumed),
        version=table.version(),
        seconds=round(time.monotonic() - started, 2),
    )
