"""The eventhouse section of the settings (``PIPELINE_EVENTHOUSE__...``): whether the source
topics are polled from Kusto, the Kusto database, and how its tables are polled."""

import dagster as dg

from pipeline_defs.lib.kusto.poller import PollSettings
from pipeline_defs.lib.kusto.resource import KustoConnection


class EventhouseSettings(dg.Config):
    """The Eventhouse poller: the seeds' primary production path into the source topics."""

    # The source switch (deploy/run.sh --source eventhouse): the poll sensors plan windows only
    # when this is on. Backfills of a day and manual runs work either way.
    enabled: bool = False
    kusto: KustoConnection = KustoConnection()
    poll: PollSettings = PollSettings()
    tables: dict[str, str] = {}  # asset name -> Kusto table, where it differs from the domain's default


class EventhouseConfigResource(dg.ConfigurableResource):
    """The poller's settings, typed and visible in the UI (the Kusto client is the ``kusto`` resource)."""

    settings: EventhouseSettings
