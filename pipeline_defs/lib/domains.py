"""What a domain registers: its definitions, its settings section, the resources of the
external systems it talks to, its topics, its Kafka feeds, its DLQ views and the Eventhouse
(Kusto) tables its source topics are polled from.

The code location (``pipeline_defs.domains``) lists the domains; the definitions, the
settings model, the DLQ views, the stream health checks, ``pipeline-topics create`` and the
test fixtures are all derived from that list, so a new domain is one folder and one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import dagster as dg

from pipeline_defs.lib.dlq.views import DlqViewSpec
from pipeline_defs.lib.ingest.feeds import KafkaFeed
from pipeline_defs.lib.kusto.poller import EventhouseSource
from pipeline_defs.lib.settings import CoreSettings


@dataclass(frozen=True)
class DomainTopics:
    """The topics a domain owns on the pipeline's cluster (source topics on a cluster of their
    own, like Event Hub, are the platform's)."""

    plain: Sequence[str] = ()
    retried: Sequence[str] = ()  # task topics, each with one retry topic per ingest.retry_delays_s
    dead_letters: Mapping[str, str] = field(default_factory=dict)  # DLQ topic -> the topic it takes records of


def _no_resources(settings: CoreSettings) -> Mapping[str, Any]:
    return {}


def _no_topics(settings: CoreSettings) -> DomainTopics:
    return DomainTopics()


@dataclass(frozen=True)
class Domain:
    name: str
    defs: dg.Definitions
    settings: Optional[type[dg.Config]] = None  # its section of the settings, under ``name``
    resources: Callable[[CoreSettings], Mapping[str, Any]] = _no_resources
    topics: Callable[[CoreSettings], DomainTopics] = _no_topics
    feeds: Sequence[KafkaFeed] = ()
    dlq_views: Sequence[DlqViewSpec] = ()
    eventhouse_sources: Sequence[EventhouseSource] = ()  # Kusto tables polled into its source topics
    # Definitions that depend on the settings (one asset per table a section lists), built when
    # the code location loads, never at import.
    build: Optional[Callable[[CoreSettings], dg.Definitions]] = None
