"""The parallel run of two sources, compared: which ids of a window reached the source topic
from the Eventhouse poller (its records carry ``eventhouse.ingestion_time``), which from the
other producer (Event Hub), and which one of them lacks. The migration from one source to the
other runs both into the same topic (the consuming asset keeps each id once), compares windows
with this job until they agree, then turns one off."""

import json
import uuid
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
        by_poller, by_other = _delivered(getattr(resources, feed.cluster), topic, source.id_column, window, margin)
        metadata: dict[str, Any] = {
            "in_eventhouse": len(in_kusto),
            "delivered_by_poller": len(by_poller),
            "delivered_by_other_source": len(by_other),
            "missing_from_other_source": len(in_kusto - by_other),
            "missing_from_eventhouse": len(by_other - near_kusto),
            "sample_missing_from_other_source": ", ".join(sorted(in_kusto - by_other)[:SAMPLE_IDS]),
            "sample_missing_from_eventhouse": ", ".join(sorted(by_other - near_kusto)[:SAMPLE_IDS]),
            "agree": not (in_kusto - by_other) and not (by_other - near_kusto),
        }
        context.log_event(dg.AssetObservation(asset_key=poll_asset_name(source), metadata=metadata))
        return dg.Output(None, metadata=metadata)

    @dg.job(name=f"{poll_asset_name(source)}_source_comparison_job", description=__doc__)
    def _job() -> None:
        _compare()

    return _job


def _delivered(
    kafka: KafkaResource, topic: str, id_column: str, window: PollWindow, margin: timedelta
) -> tuple[set[str], set[str]]:
    """Ids the topic received for the window (by record timestamp, within the margin): those
    the poller sent, and those the other source sent whose timestamp lies in the window."""
    start_ms = int((window.start - margin).timestamp() * 1000)
    begin = kafka.offsets_for_timestamp(topic, start_ms, 30)
    end = kafka.offsets_for_timestamp(topic, int((window.end + margin).timestamp() * 1000), 30)
    ranges = [OffsetRange(topic, p, begin[p], end[p]) for p in begin]
    by_poller: set[str] = set()
    by_other: set[str] = set()
    inside = (int(window.start.timestamp() * 1000), int(window.end.timestamp() * 1000))
    for batch in kafka.read_ranges(ranges, f"source-comparison-{uuid.uuid4().hex}", 10_000, 120):
        for message in batch:
            record_id = _id_of(message.value(), id_column)
            if record_id is None:
                continue
            if any(header[0] == INGESTION_TIME_HEADER for header in message.headers() or []):
                by_poller.add(record_id)
            elif inside[0] <= message.timestamp()[1] < inside[1]:
                by_other.add(record_id)
    return by_poller, by_other


def _id_of(value: bytes | None, id_column: str) -> str | None:
    try:
        document = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    found = document.get(id_column) if isinstance(document, dict) else None
    return found if isinstance(found, str) and found else None
