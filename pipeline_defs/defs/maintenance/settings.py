"""The maintenance section of the settings (``PIPELINE_MAINTENANCE__...``)."""

import dagster as dg

from pipeline_defs.lib.delta.maintenance import SAFE_RETENTION_HOURS


class MaintenanceSettings(dg.Config):
    """How, and how often, every Delta table is compacted, checkpointed and vacuumed."""

    target_file_mb: int = 256
    # Readers on older snapshots keep their files this long; below 168 h is allowed but says so.
    vacuum_retention_hours: int = SAFE_RETENTION_HOURS
    commit_interval_s: float = 60.0  # a long compaction commits its progress this often


class MaintenanceResource(dg.ConfigurableResource):
    """The maintenance settings, typed and visible in the UI."""

    settings: MaintenanceSettings
