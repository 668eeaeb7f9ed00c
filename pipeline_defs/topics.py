"""Create the pipeline's topics: ``python -m pipeline_defs.topics create``.

For the local stack and new environments; in Azure, Event Hub and the platform team's
Kafka already hold the topics, and this command only fills in what is missing. DLQ topics are
created to accept records at least as large as their source topic's, plus the error headers.
"""

from __future__ import annotations

import argparse

from pipeline_defs.lib.kafka import KafkaResource
from pipeline_defs.lib.resources import build_resources, kafka_resource
from pipeline_defs.lib.settings import PipelineConfigResource, PipelineSettings

HEADER_ROOM = 64 * 1024


def create_pipeline_topics(kafka: KafkaResource, pipeline: PipelineConfigResource, partitions: int) -> list[str]:
    """Every topic of ``pipeline`` that is missing, DLQs sized after their sources; returns all names."""
    names = pipeline.all_topics()
    dead_letters = pipeline.dead_letter_sources()
    kafka.create_topics([n for n in names if n not in dead_letters], partitions)
    limit = pipeline.topics.dlq_max_message_bytes
    configs = {
        dlq: {"max.message.bytes": str(max(limit, kafka.max_message_bytes(source) + HEADER_ROOM))}
        for dlq, source in dead_letters.items()
    }
    kafka.create_topics(list(dead_letters), partitions, configs)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["create", "list"])
    args = parser.parse_args()
    settings = PipelineSettings()
    pipeline = build_resources(settings)["pipeline"]
    if args.command == "create":
        names = create_pipeline_topics(kafka_resource(settings.kafka), pipeline, settings.topics.partitions)
    else:
        names = pipeline.all_topics()
    print("\n".join(names))


if __name__ == "__main__":
    main()
