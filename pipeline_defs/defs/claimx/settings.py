"""ClaimX's section of the settings (``PIPELINE_CLAIMX__...``): its topics, its API, its media hosts."""

from typing import Optional

import dagster as dg

from pipeline_defs.lib.settings import DownloadSettings


class ClaimXTopics(dg.Config):
    """Topic names; the defaults follow the seeds' topic design."""

    events: str = "claimx.events.raw"
    events_dlq: str = "claimx.events.raw.dlq"
    enrichment_pending: str = "claimx.enrichment.pending"
    enrichment_dlq: str = "claimx.enrichment.dlq"
    downloads_pending: str = "claimx.downloads.pending"
    downloads_dlq: str = "claimx.downloads.dlq"


class ClaimXApiSettings(dg.Config):
    """The ClaimX REST API: where it is, how hard we may press it, when we stop trying."""

    base_url: str = "https://api.claimx.example/v1"
    token_env: Optional[str] = None  # env var holding the bearer token, e.g. CLAIMX_API_TOKEN
    max_concurrent: int = 20
    timeout_s: float = 15.0
    max_attempts: int = 3  # per call, for 5xx/429/timeouts; then the task goes to a retry topic
    backoff_s: float = 0.5  # first wait between attempts; doubles, with jitter
    max_backoff_s: float = 10.0
    circuit_failure_threshold: int = 5
    circuit_reset_s: float = 30.0


class ClaimXSettings(dg.Config):
    topics: ClaimXTopics = ClaimXTopics()
    api: ClaimXApiSettings = ClaimXApiSettings()
    # Media come from presigned links on the media hosts: their own allowlist.
    media: DownloadSettings = DownloadSettings(allowed_extensions=["jpg", "jpeg", "png", "heic", "mp4", "mov", "pdf"])


class ClaimXTopicsResource(dg.ConfigurableResource):
    """ClaimX's topics, typed and visible in the UI."""

    topics: ClaimXTopics
