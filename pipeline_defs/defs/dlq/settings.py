"""The DLQ domain's section of the settings (``PIPELINE_DLQ__...``): when its checks warn or fail."""

import dagster as dg


class DlqSettings(dg.Config):
    growth_window_min: int = 60
    growth_warn_per_min: float = 1.0
    growth_error_per_min: float = 10.0
    oldest_warn_hours: float = 24.0
    oldest_error_hours: float = 72.0


class DlqLimitsResource(dg.ConfigurableResource):
    """The DLQ health thresholds, typed and visible in the UI."""

    limits: DlqSettings
