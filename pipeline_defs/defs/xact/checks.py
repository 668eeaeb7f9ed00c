"""Data-quality checks of the XACT assets, evaluated by the runs that write them."""

from pipeline_defs.lib.delta.checks import event_log_check_specs, inventory_check_specs

REQUIRED_EVENT_COLUMNS = ["trace_id", "event_type", "status_subtype", "event_timestamp"]

xact_events_check_specs = event_log_check_specs("xact_events", "trace_id_unique", REQUIRED_EVENT_COLUMNS)
xact_attachments_check_specs = inventory_check_specs("xact_attachments")
