"""``kafka_offsets_reset_job``: the operator's way out when a topic was recreated or truncated
(its log end fell below a watermark, and sensors and the ``consumer_keeps_up`` check say so).

It moves the table's Delta watermarks and the consumer group's committed offsets of the chosen
partitions to the log start, the log end or a given offset, in that order, and marks the
commit so the feed's sensor adopts it. Nothing is deleted: rows already in the table stay, and
offsets read again are deduplicated by key as usual.
"""

from collections.abc import Sequence
from enum import Enum
from typing import Any, Optional

import dagster as dg
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake
from pydantic import Field

from pipeline_defs.lib.delta.resource import DeltaLakeResource
from pipeline_defs.lib.ingest.consume import watermark_app_id
from pipeline_defs.lib.ingest.feeds import KafkaFeed
from pipeline_defs.lib.ingest.planning import RESET_MARK
from pipeline_defs.lib.kafka.resource import KafkaResource


class ResetTo(str, Enum):
    """Where to: Dagster's config names enum members, so the names are what operators type."""

    earliest = "earliest"
    latest = "latest"
    offset = "offset"


def build_reset_job(feeds: Sequence[KafkaFeed]) -> dg.JobDefinition:
    tables = sorted({feed.table for feed in feeds})
    Table = Enum("Table", {name: name for name in tables})  # type: ignore[misc]  # noqa: N806 - a type

    class OffsetResetConfig(dg.Config):
        table: Table = Field(description="The Kafka-fed table whose consumer is reset")
        topic: str = Field(description="One of the table's topics")
        partitions: list[int] = Field(default=[], description="Partitions to reset; empty: all")
        to: ResetTo = Field(default=ResetTo.earliest, description="earliest, latest, or offset")
        offset: Optional[int] = Field(default=None, ge=0, description="With to: offset")
        reason: str = Field(description="Why; written to the run's metadata")
        confirm: bool = Field(default=False, description="Must be true: later runs read from the new offsets")

    @dg.op(
        description="Move a consumer's Delta watermarks and committed offsets to the start, the end or an offset.",
        required_resource_keys={"kafka", "source_kafka", "lake", "ingest", *(k for f in feeds for k in f.resource_keys)},
    )
    def reset_kafka_offsets(context: dg.OpExecutionContext, config: OffsetResetConfig) -> None:
        resources: Any = context.resources
        lake: DeltaLakeResource = resources.lake
        table_name = config.table.value
        feed = next(
            (f for f in feeds if f.table == table_name and config.topic in {t.name for t in f.topics_of(resources)}), None
        )
        if feed is None:
            raise dg.Failure(description=f"{config.topic!r} is not a topic of {table_name}")
        if not config.confirm:
            raise dg.Failure(description="refused: set confirm to true to reset offsets")
        if config.to is ResetTo.offset and config.offset is None:
            raise dg.Failure(description="to: offset needs an offset")
        cluster: KafkaResource = getattr(resources, feed.cluster)
        states = cluster.partition_states(config.topic, cluster.connection.request_timeout_s)
        chosen = config.partitions or sorted(states)
        unknown = sorted(set(chosen) - set(states))
        if unknown:
            raise dg.Failure(description=f"{config.topic} has no partitions {unknown}")
        target = {
            p: states[p].low
            if config.to is ResetTo.earliest
            else states[p].high
            if config.to is ResetTo.latest
            else int(config.offset or 0)
            for p in chosen
        }
        group = feed.group_id(resources.ingest)
        table = lake.load(table_name)
        if table is not None:
            marks = [Transaction(watermark_app_id(group, config.topic, p), o) for p, o in target.items()]
            empty = pa.schema(table.schema().to_arrow()).empty_table()
            write_deltalake(
                table,
                empty,
                mode="append",
                commit_properties=CommitProperties(
                    app_transactions=marks, custom_metadata={"dagster_run_id": context.run.run_id, "writer": "offset_reset"}
                ),
            )
        cluster.commit_offsets(
            group, {(config.topic, p): o for p, o in target.items()}, metadata=f"{RESET_MARK}:{context.run.run_id}"
        )
        context.log.info(f"{table_name} / {group}: {config.topic} reset to {target} ({config.reason})")
        context.log_event(
            dg.AssetObservation(
                asset_key=table_name,
                metadata={
                    "offset_reset": dg.MetadataValue.json({str(p): o for p, o in target.items()}),
                    "topic": config.topic,
                    "reason": config.reason,
                },
            )
        )

    @dg.job(description="Reset a Kafka-fed table's consumer (after a topic was recreated or truncated); needs confirm: true.")
    def kafka_offsets_reset_job() -> None:
        reset_kafka_offsets()

    return kafka_offsets_reset_job
