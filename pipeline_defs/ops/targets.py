"""What the service watches, derived from the settings and the domain registry once at start:
the clusters and their topics, the consumer groups the feeds read them with, the DLQ views,
the assets and jobs of the code location, and the ClaimX API's address."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Optional

from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.dlq.views import DlqViewSpec
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import CoreSettings


@dataclass
class Cluster:
    """A Kafka cluster and the pipeline topics on it; ``pairs`` are the (group, topic) pairs the
    feeds read, reported even before the group commits anything; ``delayed`` are the retry
    topics, whose records wait out their delay before they are due."""

    name: str
    kafka: KafkaResource
    topics: list[str]
    pairs: set[tuple[str, str]] = field(default_factory=set)
    delayed: set[str] = field(default_factory=set)


@dataclass
class Targets:
    clusters: list[Cluster]
    group_prefix: str  # every consumer group of the pipeline starts with "<prefix>."
    lake: DeltaLakeResource
    dlq_views: Sequence[DlqViewSpec]
    assets: list[str]
    jobs: list[str]
    claimx_api_url: Optional[str] = None


def resolved(value: Any) -> Any:
    """A ``dg.EnvVar`` outside Dagster is only the variable's name: read its value (at start,
    never at import); anything else as it is."""
    import dagster as dg

    return value.get_value() if isinstance(value, dg.EnvVar) else value


def build_targets(settings: CoreSettings) -> Targets:
    """Everything from the registry (``pipeline_defs.domains``) and the code location."""
    from pipeline_defs.cli.topics import source_topics
    from pipeline_defs.definitions import defs
    from pipeline_defs.domains import DLQ_VIEWS, DOMAINS, build_resources, pipeline_topics

    resources = build_resources(settings)
    for key in ("kafka", "source_kafka"):
        resources[key] = resources[key].model_copy(update={"sasl_password": resolved(resources[key].sasl_password)})
    resources["lake"] = resources["lake"].model_copy(update={"azure_account_key": resolved(resources["lake"].azure_account_key)})
    namespace = SimpleNamespace(**resources)
    topics = pipeline_topics(settings)
    own = Cluster("kafka", resources["kafka"], [*topics.plain, *topics.dead_letters])
    sources = Cluster("source_kafka", resources["source_kafka"], source_topics(settings))
    ingest = resources["ingest"]
    for feed in (f for domain in DOMAINS for f in domain.feeds):
        cluster = sources if feed.cluster == "source_kafka" else own
        feed_topics = feed.topics_of(namespace)
        cluster.pairs |= {(feed.group_id(ingest), topic.name) for topic in feed_topics}
        cluster.delayed |= {topic.name for topic in feed_topics if topic.delay_s}
    clusters = merge_clusters([own, sources])
    definitions = defs()
    claimx = getattr(settings, "claimx", None)
    return Targets(
        clusters=clusters,
        group_prefix=f"{settings.ingest.consumer_group_prefix}.",
        lake=resources["lake"],
        dlq_views=list(DLQ_VIEWS.values()),
        assets=sorted(key.to_user_string() for key in definitions.resolve_all_asset_keys()),
        jobs=sorted(job.name for job in definitions.resolve_all_job_defs() if not job.name.startswith("__")),
        claimx_api_url=claimx.api.base_url if claimx is not None else None,
    )


def merge_clusters(clusters: Sequence[Cluster]) -> list[Cluster]:
    """One cluster per bootstrap address: locally the source topics share the pipeline's broker."""
    merged: dict[str, Cluster] = {}
    for cluster in clusters:
        address = cluster.kafka.connection.bootstrap_servers
        if address in merged:
            into = merged[address]
            into.topics += [t for t in cluster.topics if t not in into.topics]
            into.pairs |= cluster.pairs
            into.delayed |= cluster.delayed
        else:
            merged[address] = Cluster(
                cluster.name, cluster.kafka, list(dict.fromkeys(cluster.topics)), set(cluster.pairs), set(cluster.delayed)
            )
    return list(merged.values())
