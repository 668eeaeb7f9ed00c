"""XACT's section of the settings (``PIPELINE_XACT__...``): its topics and its attachment hosts."""

import dagster as dg

from pipeline_defs.lib.settings import DownloadSettings


class XactTopics(dg.Config):
    """Topic names; the defaults follow the seeds' topic design."""

    events: str = "events.raw"
    events_dlq: str = "events.raw.dlq"
    downloads_pending: str = "downloads.pending"
    downloads_dlq: str = "downloads.dlq"


class XactSettings(dg.Config):
    topics: XactTopics = XactTopics()
    downloads: DownloadSettings = DownloadSettings()  # the attachment hosts: allowlist and limits


class XactTopicsResource(dg.ConfigurableResource):
    """XACT's topics, typed and visible in the UI."""

    topics: XactTopics
