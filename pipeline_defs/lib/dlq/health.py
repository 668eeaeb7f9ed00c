"""How a DLQ view is doing: what waits, by category, how old the oldest entry is, how fast new ones arrive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Optional

import polars as pl

from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.dlq.views import WAITING, DlqViewSpec


@dataclass(frozen=True)
class DlqHealth:
    waiting: int
    by_category: dict[str, int]
    oldest_age_s: Optional[float]
    new_per_minute: float  # entries first seen within the growth window, per minute


def health(lake: DeltaLakeResource, spec: DlqViewSpec, window: timedelta, now: Optional[datetime] = None) -> DlqHealth:
    now = now or datetime.now(UTC)
    scan = lake.scan(spec.table)
    if scan is None:
        return DlqHealth(0, {}, None, 0.0)
    waiting = scan.filter(pl.col("status") == WAITING).select("error_category", "first_seen").collect()
    by_category = {str(k): int(v) for k, v in waiting.group_by("error_category").len().iter_rows()}
    oldest = waiting["first_seen"].min()
    recent = scan.filter(pl.col("first_seen") >= now - window).select(pl.len()).collect().item()
    return DlqHealth(
        waiting=waiting.height,
        by_category=by_category,
        oldest_age_s=(now - oldest).total_seconds() if isinstance(oldest, datetime) else None,
        new_per_minute=recent / (window.total_seconds() / 60),
    )
