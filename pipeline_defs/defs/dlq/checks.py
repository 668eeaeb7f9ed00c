"""Health checks of a DLQ view: how fast it grows, how old its oldest waiting entry is."""

from datetime import timedelta

import dagster as dg

from pipeline_defs.defs.dlq.settings import DlqLimitsResource
from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.dlq.health import health
from pipeline_defs.lib.dlq.views import DlqViewSpec


def graded(value: float, warn: float, error: float, metadata: dict) -> dg.AssetCheckResult:
    """Pass below ``warn``; WARN from ``warn``; ERROR from ``error``."""
    if value >= error:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)
    if value >= warn:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)
    return dg.AssetCheckResult(passed=True, metadata=metadata)


def dlq_health_checks(spec: DlqViewSpec) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(
        asset=spec.table,
        name="growth_rate",
        description="New dead letters per minute over the growth window (dlq.growth_* settings).",
    )
    def growth(lake: DeltaLakeResource, dlq_limits: DlqLimitsResource) -> dg.AssetCheckResult:
        limits = dlq_limits.limits
        state = health(lake, spec, timedelta(minutes=limits.growth_window_min))
        return graded(
            state.new_per_minute,
            limits.growth_warn_per_min,
            limits.growth_error_per_min,
            {"new_per_minute": round(state.new_per_minute, 3), "window_min": limits.growth_window_min},
        )

    @dg.asset_check(
        asset=spec.table,
        name="oldest_entry_age",
        description="Age of the oldest waiting entry (dlq.oldest_* settings).",
    )
    def oldest(lake: DeltaLakeResource, dlq_limits: DlqLimitsResource) -> dg.AssetCheckResult:
        limits = dlq_limits.limits
        state = health(lake, spec, timedelta(minutes=limits.growth_window_min))
        hours = (state.oldest_age_s or 0) / 3600
        return graded(
            hours,
            limits.oldest_warn_hours,
            limits.oldest_error_hours,
            {"oldest_waiting_hours": round(hours, 2), "waiting": state.waiting},
        )

    return [growth, oldest]
