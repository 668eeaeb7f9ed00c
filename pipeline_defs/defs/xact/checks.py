from datetime import date

import dagster as dg

from pipeline_defs.lib.delta import DeltaLakeResource
from pipeline_defs.lib.delta_checks import keys_unique, required_present
from pipeline_defs.lib.schemas.xact import XACT_EVENTS_SINK

REQUIRED_COLUMNS = ["trace_id", "event_type", "status_subtype", "event_timestamp"]

xact_events_check_specs = [
    dg.AssetCheckSpec(
        "trace_id_unique",
        asset="xact_events",
        blocking=True,
        description="Each trace_id the run wrote appears once within the deduplication window.",
    ),
    dg.AssetCheckSpec(
        "required_fields_present",
        asset="xact_events",
        blocking=True,
        description="trace_id, event type, status subtype and event timestamp are never empty.",
    ),
]


def xact_events_checks(
    lake: DeltaLakeResource, run_id: str, day: date, window_days: int
) -> list[dg.AssetCheckResult]:
    """Read back what the run committed; run inside the asset so a failure blocks downstream."""
    table, keys = XACT_EVENTS_SINK.table, XACT_EVENTS_SINK.key_columns
    return [
        keys_unique(lake, table, keys, run_id, day, window_days, check_name="trace_id_unique"),
        required_present(
            lake, table, REQUIRED_COLUMNS, run_id, check_name="required_fields_present"
        ),
    ]
