"""XACT: events whose attachments are downloaded into OneLake. Registers its assets, jobs and
sensors, its settings section (topics and attachment hosts), the attachment hosts' resource,
its topics, its Kafka feeds and its two DLQ views."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from pipeline_defs.defs.xact.assets import xact_attachments, xact_events
from pipeline_defs.defs.xact.feeds import XACT_EVENTS_FEED, XACT_FEEDS
from pipeline_defs.defs.xact.models import XactDownloadTask
from pipeline_defs.defs.xact.sensors import (
    xact_attachments_job,
    xact_attachments_pending_sensor,
    xact_attachments_retry_sensor,
    xact_attachments_stream_job,
    xact_attachments_stream_sensor,
    xact_events_job,
    xact_events_kafka_sensor,
    xact_events_stream_job,
    xact_events_stream_sensor,
)
from pipeline_defs.defs.xact.settings import XactSettings, XactTopicsResource
from pipeline_defs.lib.attachments.downloader import AttachmentHttpResource
from pipeline_defs.lib.dlq.kinds import record_dlq, task_dlq
from pipeline_defs.lib.domains import Domain, DomainTopics
from pipeline_defs.lib.kusto.poller import EventhouseSource
from pipeline_defs.lib.settings import CoreSettings, section


def _settings(settings: CoreSettings) -> XactSettings:
    return section(settings, "xact", XactSettings)


def _resources(settings: CoreSettings) -> Mapping[str, Any]:
    own = _settings(settings)
    return {
        "xact_topics": XactTopicsResource(topics=own.topics),
        "attachment_http": AttachmentHttpResource(settings=own.downloads),
    }


def _topics(settings: CoreSettings) -> DomainTopics:
    topics = _settings(settings).topics
    return DomainTopics(
        plain=[topics.events],
        retried=[topics.downloads_pending],
        dead_letters={topics.events_dlq: topics.events, topics.downloads_dlq: topics.downloads_pending},
    )


DOMAIN = Domain(
    name="xact",
    defs=dg.Definitions(
        assets=[xact_events, xact_attachments],
        jobs=[xact_events_job, xact_attachments_job, xact_events_stream_job, xact_attachments_stream_job],
        sensors=[
            xact_events_kafka_sensor,
            xact_attachments_pending_sensor,
            xact_attachments_retry_sensor,
            xact_events_stream_sensor,
            xact_attachments_stream_sensor,
        ],
    ),
    settings=XactSettings,
    resources=_resources,
    topics=_topics,
    feeds=XACT_FEEDS,
    dlq_views=(
        record_dlq("xact_events", lambda r: r.xact_topics.topics.events_dlq, "xact_topics", replay_cluster="source_kafka"),
        task_dlq(
            "xact_downloads",
            lambda r: r.xact_topics.topics.downloads_dlq,
            lambda r: r.xact_topics.topics.downloads_pending,
            XactDownloadTask,
            "xact_topics",
        ),
    ),
    eventhouse_sources=(
        EventhouseSource(
            XACT_EVENTS_FEED, "XactEvents", "trace_id", "event_timestamp", lambda r: r.xact_topics.topics.events_dlq
        ),
    ),
)
