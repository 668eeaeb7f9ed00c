"""Create the pipeline's topics: ``python -m pipeline_defs.topics create``.

For the local stack and new environments; in Azure, Event Hub and the platform team's
Kafka already hold the topics, and this command only fills in what is missing.
"""

from __future__ import annotations

import argparse

from pipeline_defs.lib.resources import build_resources, kafka_resource
from pipeline_defs.lib.settings import PipelineSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["create", "list"])
    args = parser.parse_args()
    settings = PipelineSettings()
    names = build_resources(settings)["pipeline"].all_topics()
    if args.command == "create":
        kafka_resource(settings.kafka).create_topics(names, settings.topics.partitions)
    print("\n".join(names))


if __name__ == "__main__":
    main()
