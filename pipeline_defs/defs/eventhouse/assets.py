"""One asset per Eventhouse source: a run polls its poll windows (tag ``eventhouse/window``) or,
without the tag (a backfill from the UI, a Materialize click), every window of its day, into
the source topic of the asset it feeds."""

from datetime import UTC, date, datetime, timedelta
from typing import Any, Optional

import dagster as dg

from pipeline_defs.defs.eventhouse.settings import EventhouseSettings
from pipeline_defs.lib.dlq.records import DeadLetterTopic
from pipeline_defs.lib.kafka.records import Topic
from pipeline_defs.lib.kusto.poller import EventhouseSource, WindowPoller, per_second
from pipeline_defs.lib.kusto.windows import WINDOW_TAG, PollWindow, day_window
from pipeline_defs.lib.policies import OWNERS, TRANSIENT_FAILURE_RETRY, ingestion_days

MAX_REQUEST_IDS_SHOWN = 20


def poll_asset_name(source: EventhouseSource) -> str:
    return f"eventhouse_{source.name}"


def window_of_run(tag: Optional[str], partition_key: str) -> PollWindow:
    """The run's windows: its tag, which must lie in its day partition, or the whole day."""
    day = day_window(date.fromisoformat(partition_key))
    if tag is None:
        return day
    window = PollWindow.from_tag(tag)
    if window.start < day.start or window.end > day.end:  # a mistake, not a hiccup: no retries
        raise dg.Failure(f"window {tag} lies outside partition {partition_key}", allow_retries=False)
    return window


def build_poll_asset(source: EventhouseSource) -> dg.AssetsDefinition:
    feed = source.feed

    @dg.asset(
        name=poll_asset_name(source),
        partitions_def=ingestion_days,
        kinds={"kusto", "kafka"},
        group_name="eventhouse",
        owners=OWNERS,
        retry_policy=TRANSIENT_FAILURE_RETRY,
        required_resource_keys={"kusto", "eventhouse", "lake", "files", "kafka", feed.cluster, *feed.resource_keys},
        description=(
            f"Kusto table polled into the source topic of {feed.asset_name}, window by window of ingestion_time() "
            "(a sensor plans the windows; a backfill re-polls a day). Ids the table already holds are skipped "
            "(a KQL anti-join, then an exact check), so a re-polled window sends nothing it would keep."
        ),
    )
    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        resources: Any = context.resources
        settings: EventhouseSettings = resources.eventhouse.settings
        tag = context.run.tags.get(WINDOW_TAG)
        window = window_of_run(tag, context.partition_key)
        if tag and window.end > datetime.now(UTC) - timedelta(seconds=settings.poll.lag_s):
            # Polled now, rows still arriving for it would never be read: the window would close.
            raise dg.Failure(f"window {tag} ends after now - lag ({settings.poll.lag_s:g} s): too early to poll")
        source_cluster, topic = getattr(resources, feed.cluster), feed.topics_of(resources)[0].name
        poller = WindowPoller(
            kusto=resources.kusto,
            lake=resources.lake,
            topic=Topic(source_cluster, topic),
            dead_letters=DeadLetterTopic(resources.kafka, source.dead_letters_of(resources), resources.files),
            source=source,
            kusto_table=settings.tables.get(source.name, source.table),
            settings=settings.poll,
            run_id=context.run.run_id,
            max_record_bytes=source_cluster.max_message_bytes(topic),
        )
        window_s = settings.poll.window_s if tag else max(settings.poll.window_s, settings.poll.backfill_window_s)
        outcome = poller.poll(window.split(window_s))
        return dg.MaterializeResult(
            metadata={
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
                "windows": outcome.windows,
                "rows_read": outcome.rows_read,
                "new": outcome.produced,
                "duplicates_skipped": outcome.duplicates,
                "dead_lettered": outcome.dead_lettered,
                "anti_join_ids": outcome.anti_join_ids,
                "pages": outcome.pages,
                "query_attempts": outcome.query_attempts,
                "query_s": dg.FloatMetadataValue(round(outcome.query_s, 3)),
                "rows_per_query_s": per_second(outcome.rows_read, outcome.query_s),
                "kusto_request_ids": ", ".join(outcome.request_ids[:MAX_REQUEST_IDS_SHOWN]),
            }
        )

    return _asset
