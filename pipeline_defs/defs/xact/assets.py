"""XACT: the event log and the attachment inventory. Each asset's batch runs and its streaming
run (``sensors.py``) share one definition of what it reads, writes and reports."""

import dagster as dg

from pipeline_defs.defs.xact.checks import REQUIRED_EVENT_COLUMNS, xact_attachments_check_specs, xact_events_check_specs
from pipeline_defs.defs.xact.feeds import XACT_DOWNLOADS_FEED, XACT_EVENTS_FEED
from pipeline_defs.defs.xact.models import (
    XACT_ATTACHMENTS,
    XACT_EVENTS,
    XACT_TASK_COLUMNS,
    xact_download_task_records,
    xact_download_tasks,
)
from pipeline_defs.lib.attachments.inventory import AttachmentAsset
from pipeline_defs.lib.ingest.runs import EventLogAsset, EventTopics, RepairSource, TaskTopics
from pipeline_defs.lib.policies import OWNERS, TRANSIENT_FAILURE_RETRY, ingestion_days

XACT_EVENT_LOG = EventLogAsset(
    spec=XACT_EVENTS,
    feed=XACT_EVENTS_FEED,
    topics_of=lambda r: EventTopics(
        r.xact_topics.topics.events, r.xact_topics.topics.events_dlq, r.xact_topics.topics.downloads_pending
    ),
    follow_ups=xact_download_task_records,
    required_columns=REQUIRED_EVENT_COLUMNS,
    key_check="trace_id_unique",
)

XACT_INVENTORY = AttachmentAsset(
    spec=XACT_ATTACHMENTS,
    feed=XACT_DOWNLOADS_FEED,
    http_key="attachment_http",
    topics_of=lambda r: TaskTopics(r.xact_topics.topics.downloads_pending, r.xact_topics.topics.downloads_dlq),
    repair=RepairSource(XACT_EVENTS.table, XACT_TASK_COLUMNS, xact_download_tasks),
)


@dg.asset(
    name="xact_events",
    partitions_def=ingestion_days,
    group_name="xact",
    kinds={"kafka", "deltalake"},
    owners=OWNERS,
    pool="delta_xact_events",
    retry_policy=TRANSIENT_FAILURE_RETRY,
    check_specs=xact_events_check_specs,
    required_resource_keys=XACT_EVENT_LOG.resource_keys,
    description=(
        "Every XACT event from `events.raw`, one row per trace_id, partitioned by ingestion "
        "date. Malformed or invalid messages go to the events DLQ topic with their reason; "
        "each new event's attachment URLs become download tasks on `downloads.pending`."
    ),
)
def xact_events(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return XACT_EVENT_LOG.materialize(context)


@dg.asset(
    name="xact_attachments",
    partitions_def=ingestion_days,
    deps=[xact_events],
    group_name="xact",
    kinds={"kafka", "deltalake", "azure"},
    owners=OWNERS,
    pool="delta_xact_attachments",
    retry_policy=TRANSIENT_FAILURE_RETRY,
    check_specs=xact_attachments_check_specs,
    required_resource_keys=XACT_INVENTORY.resource_keys,
    description=(
        "Inventory of every XACT attachment downloaded and uploaded to OneLake, one row per "
        "(trace_id, attachment_url), in its event's ingestion-date partition. Sensor runs work "
        "`downloads.pending` and the due part of its retry topics; a backfill of a day downloads "
        "that day's xact_events attachments missing here. Failures retry, then go to the DLQ."
    ),
)
def xact_attachments(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return XACT_INVENTORY.materialize(context)
