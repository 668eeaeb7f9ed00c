"""Every dead-letter topic of the platform, by the name operators use."""

from pipeline_defs.lib.dlq_views import DlqViewSpec, record_dlq, task_dlq
from pipeline_defs.lib.schemas.claimx import ClaimXDownloadTask, ClaimXEnrichmentTask
from pipeline_defs.lib.schemas.xact import XactDownloadTask

DLQ_VIEWS: dict[str, DlqViewSpec] = {
    spec.name: spec
    for spec in [
        record_dlq("xact_events", lambda p: p.topics.xact_events_dlq, replay_cluster="source_kafka"),
        task_dlq(
            "xact_downloads",
            lambda p: p.topics.xact_downloads_dlq,
            lambda p: p.topics.xact_downloads_pending,
            XactDownloadTask,
        ),
        record_dlq("claimx_events", lambda p: p.topics.claimx_events_dlq, replay_cluster="source_kafka"),
        task_dlq(
            "claimx_enrichment",
            lambda p: p.topics.claimx_enrichment_dlq,
            lambda p: p.topics.claimx_enrichment_pending,
            ClaimXEnrichmentTask,
        ),
        task_dlq(
            "claimx_downloads",
            lambda p: p.topics.claimx_downloads_dlq,
            lambda p: p.topics.claimx_downloads_pending,
            ClaimXDownloadTask,
        ),
    ]
}
