"""ClaimX: the event log, the entity tables the API enrichment keeps current, and the media
inventory. Each asset's batch runs and its streaming run share one definition (``runs.py``)."""

from collections.abc import Iterator

import dagster as dg

from pipeline_defs.defs.claimx.checks import (
    claimx_attachments_check_specs,
    claimx_events_check_specs,
    entity_check_specs,
)
from pipeline_defs.defs.claimx.enrichment import ENRICHMENT_LOG
from pipeline_defs.defs.claimx.entities import ENTITY_TABLES, MEDIA
from pipeline_defs.defs.claimx.runs import CLAIMX_ENRICHMENT, CLAIMX_EVENT_LOG, CLAIMX_INVENTORY, api_access_required
from pipeline_defs.lib.policies import OWNERS, TRANSIENT_FAILURE_RETRY, ingestion_days


@dg.asset(
    name="claimx_events",
    partitions_def=ingestion_days,
    group_name="claimx",
    kinds={"kafka", "deltalake"},
    owners=OWNERS,
    pool="delta_claimx_events",
    retry_policy=TRANSIENT_FAILURE_RETRY,
    check_specs=claimx_events_check_specs,
    required_resource_keys=CLAIMX_EVENT_LOG.resource_keys,
    description=(
        "Every ClaimX event from `claimx.events.raw` (all nine event types), one row per event_id, "
        "partitioned by ingestion date. Unknown event types and invalid messages go to the ClaimX "
        "events DLQ with their reason; each new event becomes an enrichment task."
    ),
)
def claimx_events(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return CLAIMX_EVENT_LOG.materialize(context)


ENTITY_DESCRIPTIONS = {
    "claimx_projects": "Latest state of each ClaimX project (claim, policy, loss, address, master file name).",
    "claimx_contacts": "Project contacts (policyholder, adjuster) with their invite status.",
    "claimx_media": "Media files of each project (name, type, size, capture time); the files themselves are in claimx_attachments.",
    "claimx_tasks": "Custom tasks assigned on a project, with their status.",
    "claimx_task_templates": "The templates custom tasks are made from, per project.",
    "claimx_external_links": "Customer links sent for custom tasks (host only: the link's token is never stored).",
    "claimx_video_collab": "Video collaboration sessions and their outcome.",
}


@dg.multi_asset(
    name="claimx_entities",
    specs=[
        *(
            dg.AssetSpec(
                table.name,
                deps=[claimx_events],
                group_name="claimx",
                kinds={"deltalake"},
                owners=OWNERS,
                description=f"{ENTITY_DESCRIPTIONS[table.name]} MERGEd on ({', '.join(table.keys)}) from the ClaimX API.",
            )
            for table in ENTITY_TABLES
        ),
        dg.AssetSpec(
            ENRICHMENT_LOG,
            deps=[claimx_events],
            group_name="claimx",
            kinds={"kafka", "deltalake"},
            owners=OWNERS,
            description=(
                "One row per ClaimX event: enriched, retrying or dead-lettered, with the reason, the tables it "
                "touched and the media it queued. Sensor runs work `claimx.enrichment.pending` and the due part "
                "of its retry topics; a backfill of a day enriches that day's claimx_events again."
            ),
        ),
    ],
    partitions_def=ingestion_days,
    pool="delta_claimx_entities",
    retry_policy=TRANSIENT_FAILURE_RETRY,
    check_specs=entity_check_specs,
    required_resource_keys=CLAIMX_ENRICHMENT.resource_keys,
)
def claimx_entities(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    yield from CLAIMX_ENRICHMENT.materialize(context)


@dg.asset(
    name="claimx_attachments",
    partitions_def=ingestion_days,
    deps=[MEDIA.name],
    group_name="claimx",
    kinds={"kafka", "deltalake", "azure"},
    owners=OWNERS,
    pool="delta_claimx_attachments",
    retry_policy=TRANSIENT_FAILURE_RETRY,
    check_specs=claimx_attachments_check_specs,
    required_resource_keys=CLAIMX_INVENTORY.resource_keys,
    description=(
        "Inventory of every ClaimX media file downloaded from its presigned link and uploaded to "
        "OneLake under `claimx/<project>/media/`, one row per media_id. Expired links are renewed "
        "through the media API before the retry. Sensor runs work `claimx.downloads.pending` and its "
        "due retry topics; a backfill of a day downloads that day's files missing here."
    ),
)
def claimx_attachments(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    with api_access_required():
        return CLAIMX_INVENTORY.materialize(context)
