"""The parallel run of two sources, compared: which ids of a window reached the source topic
from the Eventhouse poller (its records carry ``eventhouse.ingestion_time``), which from the
other producer (Event Hub), and which one of them lacks. The migration from one source to the
other runs both into the same topic (the consuming asset keeps each id once), compares windows
with this job until they agree, then turns one off."""

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dagster as dg

from pipeline_defs.defs.eventhouse.assets import poll_asset_name
from pipeline_defs.defs.eventhouse.settings import EventhouseSettings
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.kusto.poller import INGESTION_TIME_HEADER, EventhouseSource
from pipeline_defs.lib.kusto.polling import page_query, window_pages
from pipeline_defs.lib.kusto.windows import PollWindow

SAMPLE_IDS = 20


class CompareConfig(dg.Config):
    start: str  # ISO 8601 instant: the window compared, [start, end)
    end: str
    margin_s: float = 600.0  # how far the two sources' clocks for one event may lie apart


def build_comparison_job(source: EventhouseSource) -> dg.JobDefinition:
    feed = source.feed

    @dg.op(
        name=f"compare_{source.name}_sources",
        required_resource_keys={"kusto", "eventhouse", feed.cluster, *feed.resource_keys},
    )
    def _compare(context: dg.OpExecutionContext, config: CompareConfig) -> dg.Output[None]:
        resources: Any = context.resources
        settings: EventhouseSettings = resources.eventhouse.settings
        window = PollWindow(datetime.fromisoformat(config.start), datetime.fromisoformat(config.end))
        margin = timedelta(seconds=config.margin_s)
        table = settings.tables.get(source.name, source.table)

        def kusto_ids(span: PollWindow) -> set[str]:
            pages = window_pages(
                resources.kusto, page_query(table, source.id_column), span, timedelta(0), (), settings.poll.page_rows,
                f"pipeline_defs.source_comparison;{context.run_id}",
            )  # fmt: skip
            return {row.id for rows, _ in pages for row in rows if row.id}

        in_kusto, near_kusto = kusto_ids(window), kusto_ids(PollWindow(window.start - margin, window.end + margin))
        topic = feed.topics_of(resources)[0].name
        delivered = _delivered(getattr(resources, feed.cluster), topic, source.id_column, window, margin)
        # Each side's ids of the window against the other's within the margin: one event's two
        # clocks (Event Hub's enqueue time, Kusto's ingestion time) may straddle a window edge.
        lacking_other = in_kusto - delivered.other_near
        lacking_eventhouse = delivered.other_inside - near_kusto
        metadata: dict[str, Any] = {
            "in_eventhouse": len(in_kusto),
            "delivered_by_poller": len(delivered.poller),
            "delivered_by_other_source": len(delivered.other_inside),
            "missing_from_other_source": len(lacking_other),
            "missing_from_eventhouse": len(lacking_eventhouse),
            "sample_missing_from_other_source": ", ".join(sorted(lacking_other)[:SAMPLE_IDS]),
            "sample_missing_from_eventhouse": ", ".join(sorted(lacking_eventhouse)[:SAMPLE_IDS]),
            "agree": not lacking_other and not lacking_eventhouse,
        }
        context.log_event(dg.AssetObservation(asset_key=poll_asset_name(source), metadata=metadata))
        return dg.Output(None, metadata=metadata)

    @dg.job(name=f"{poll_asset_name(source)}_source_comparison_job", description=__doc__)
    def _job() -> None:
        _compare()

    return _job


@dataclass
class Delivered:
    poller: set[str] = field(default_factory=set)  # the poller's records (their header says so)
    other_near: set[str] = field(default_factory=set)  # the other source's, within the margin of the window
    other_inside: set[str] = field(default_factory=set)  # the other source's, stamped inside the window


def _delivered(kafka: KafkaResource, topic: str, id_column: str, window: PollWindow, margin: timedelta) -> Delivered:
    """Ids the topic received around the window (by record timestamp, within the margin)."""
    start_ms = int((window.start - margin).timestamp() * 1000)
    begin = kafka.offsets_for_timestamp(topic, start_ms, 30)
    end = kafka.offsets_for_timestamp(topic, int((window.end + margin).timestamp() * 1000), 30)
    ranges = [OffsetRange(topic, p, begin[p], end[p]) for p in begin]
    delivered = Delivered()
    inside = (int(window.start.timestamp() * 1000), int(window.end.timestamp() * 1000))
    for batch in kafka.read_ranges(ranges, f"source-comparison-{uuid.uuid4().hex}", 10_000, 120):
        for message in batch:
            record_id = _id_of(message.value(), id_column)
            if record_id is None:
                continue
            if any(header[0] == INGESTION_TIME_HEADER for header in message.headers() or []):
                delivered.poller.add(record_id)
                continue
            delivered.other_near.add(record_id)
            if inside[0] <= message.timestamp()[1] < inside[1]:
                delivered.other_inside.add(record_id)
    return delivered


def _id_of(value: bytes | None, id_column: str) -> str | None:
    try:
        document = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    found = document.get(id_column) if isinstance(document, dict) else None
    if isinstance(found, int) and not isinstance(found, bool):  # a numeric id, as Kusto's tostring() writes it
        return str(found)
    return found if isinstance(found, str) and found else None
