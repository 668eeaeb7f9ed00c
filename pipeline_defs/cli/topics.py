"""Create the pipeline's topics: ``pipeline-topics create`` (or ``python -m pipeline_defs.cli.topics``).

For the local stack and new environments; in Azure, Event Hub and the platform team's
Kafka already hold the topics, and this command only fills in what is missing. DLQ topics are
created to accept records at least as large as their source topic's, plus the error headers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Optional

from pipeline_defs.domains import DOMAINS, PipelineSettings, build_resources, pipeline_topics
from pipeline_defs.lib.domains import DomainTopics
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.resources import kafka_resource
from pipeline_defs.lib.settings import CoreSettings

HEADER_ROOM = 64 * 1024


def create_pipeline_topics(kafka: KafkaResource, topics: DomainTopics, partitions: int, dlq_max_message_bytes: int) -> list[str]:
    """Every topic in ``topics`` that is missing, DLQs sized after their sources; returns all names."""
    kafka.create_topics(list(topics.plain), partitions)
    configs = {
        dlq: {"max.message.bytes": str(max(dlq_max_message_bytes, kafka.max_message_bytes(source) + HEADER_ROOM))}
        for dlq, source in topics.dead_letters.items()
    }
    kafka.create_topics(list(topics.dead_letters), partitions, configs)
    return [*topics.plain, *topics.dead_letters]


def source_topics(settings: CoreSettings) -> list[str]:
    """The topics the domains' feeds read from the source cluster (``source_kafka``)."""
    resources = SimpleNamespace(**build_resources(settings))
    feeds = [feed for domain in DOMAINS for feed in domain.feeds if feed.cluster == "source_kafka"]
    return sorted({topic.name for feed in feeds for topic in feed.topics_of(resources)})


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="pipeline-topics", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["create", "list"])
    parser.add_argument(
        "--sources",
        action="store_true",
        help="the source topics (events.raw, ...) on the source cluster instead: for a local stand-in of Event Hub",
    )
    args = parser.parse_args(argv)
    settings = PipelineSettings()
    if args.sources:
        names = source_topics(settings)
        if args.command == "create":
            kafka_resource(settings.source_kafka).create_topics(names, settings.ingest.topic_partitions)
        print("\n".join(names))
        return
    topics = pipeline_topics(settings)
    if args.command == "create":
        ingest = settings.ingest
        names = create_pipeline_topics(
            kafka_resource(settings.kafka), topics, ingest.topic_partitions, ingest.dlq_max_message_bytes
        )
    else:
        names = [*topics.plain, *topics.dead_letters]
    print("\n".join(names))


if __name__ == "__main__":
    main()
