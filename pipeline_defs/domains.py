"""The domains of this code location. A new domain is a folder under ``defs/`` and one line
here; its settings section, resources, topics, Kafka feeds and DLQ views are picked up from
its registration by the definitions, ``pipeline-topics``, the DLQ and health domains and the
test fixtures."""

from __future__ import annotations

from typing import Any

from pipeline_defs.defs import cdc, claimx, xact
from pipeline_defs.defs.dlq import dlq_domain
from pipeline_defs.defs.eventhouse import eventhouse_domain
from pipeline_defs.defs.health import health_domain
from pipeline_defs.defs.maintenance import maintenance_domain
from pipeline_defs.lib.dlq.views import DlqViewSpec
from pipeline_defs.lib.domains import Domain, DomainTopics
from pipeline_defs.lib.resources import shared_resources
from pipeline_defs.lib.settings import CoreSettings, retry_topic_name, settings_model

DATA_DOMAINS: tuple[Domain, ...] = (
    xact.DOMAIN,
    claimx.DOMAIN,
    cdc.DOMAIN,
)
DLQ_DOMAIN = dlq_domain(DATA_DOMAINS)
DOMAINS: tuple[Domain, ...] = (
    *DATA_DOMAINS,
    DLQ_DOMAIN,
    eventhouse_domain(DATA_DOMAINS),
    health_domain((*DATA_DOMAINS, DLQ_DOMAIN)),
    maintenance_domain((*DATA_DOMAINS, DLQ_DOMAIN)),
)

PipelineSettings = settings_model({domain.name: domain.settings for domain in DOMAINS if domain.settings})

DLQ_VIEWS: dict[str, DlqViewSpec] = {spec.name: spec for domain in DATA_DOMAINS for spec in domain.dlq_views}


def build_resources(settings: CoreSettings) -> dict[str, Any]:
    """Every resource of the code location: the shared ones and each domain's own."""
    resources = shared_resources(settings)
    for domain in DOMAINS:
        resources.update(domain.resources(settings))
    return resources


def pipeline_topics(settings: CoreSettings) -> DomainTopics:
    """Every topic the domains own, retry topics included."""
    plain: list[str] = []
    dead_letters: dict[str, str] = {}
    for domain in DOMAINS:
        topics = domain.topics(settings)
        plain += [*topics.plain, *topics.retried]
        plain += [retry_topic_name(t, delay) for t in topics.retried for delay in settings.ingest.retry_delays_s]
        dead_letters.update(topics.dead_letters)
    return DomainTopics(plain=plain, dead_letters=dead_letters)
