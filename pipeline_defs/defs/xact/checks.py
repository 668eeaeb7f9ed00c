import dagster as dg

from pipeline_defs.lib.delta import DeltaLakeResource
from pipeline_defs.lib.delta_checks import blobs_match_inventory, failure_ratio, keys_unique, required_present
from pipeline_defs.lib.file_store import FileStoreResource
from pipeline_defs.lib.kafka_to_delta import IngestReport
from pipeline_defs.lib.schemas.xact import XACT_ATTACHMENTS, XACT_EVENTS

REQUIRED_EVENT_COLUMNS = ["trace_id", "event_type", "status_subtype", "event_timestamp"]

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

xact_attachments_check_specs = [
    dg.AssetCheckSpec(
        "inventory_key_unique",
        asset="xact_attachments",
        blocking=True,
        description="Each (trace_id, attachment_url) the run recorded appears once.",
    ),
    dg.AssetCheckSpec(
        "blobs_exist_with_recorded_size",
        asset="xact_attachments",
        description="For a sample of the run's rows, the blob exists in OneLake with the recorded size.",
    ),
    dg.AssetCheckSpec(
        "failed_attachment_ratio",
        asset="xact_attachments",
        description="WARN when too many of the run's download attempts failed.",
    ),
]


def xact_events_checks(lake: DeltaLakeResource, run_id: str, window_days: int) -> list[dg.AssetCheckResult]:
    """Read back what the run committed; run inside the asset so a failure blocks downstream."""
    return [
        keys_unique(lake, XACT_EVENTS.table, XACT_EVENTS.key_columns, run_id, window_days, "trace_id_unique"),
        required_present(lake, XACT_EVENTS.table, REQUIRED_EVENT_COLUMNS, run_id, "required_fields_present"),
    ]


def xact_attachments_checks(
    lake: DeltaLakeResource,
    files: FileStoreResource,
    run_id: str,
    report: IngestReport,
    failure_threshold: float,
) -> list[dg.AssetCheckResult]:
    table = XACT_ATTACHMENTS.table
    return [
        keys_unique(lake, table, XACT_ATTACHMENTS.key_columns, run_id, 1, "inventory_key_unique"),
        blobs_match_inventory(lake, files, table, run_id, "blobs_exist_with_recorded_size"),
        failure_ratio(report, failure_threshold, "failed_attachment_ratio"),
    ]
