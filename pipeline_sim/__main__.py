"""Sample XACT and ClaimX traffic for the local stack: ``pipeline-sim`` (``python -m pipeline_sim``).

Produces realistic XACT events at ``--rate`` per second and ClaimX events at ``--claimx-rate``,
resends some (``--duplicate-ratio``), sends some broken ones (``--malformed-ratio``), and serves
what the pipeline fetches from hosts on 127.0.0.1: the XACT attachment host (a few URLs failing
the way real hosts fail: 404, a 503 once, an HTML page instead of a PDF), the ClaimX API double
(``--claimx-api-port``) and the ClaimX media host its presigned links point at. A few ClaimX
events name a project the API does not know (404), so the enrichment DLQ has something to show.
With ``--source eventhouse`` the events go into the tables of a Kusto double (``--kusto-port``)
that the Eventhouse poller reads, instead of the source topics. ``--cdc-rate`` Debezium change
events per second of the demo Cassandra tables go to ``cassandra.claims.*``; ``pipeline-sim cdc``
sends those alone (see ``pipeline_sim.cdc_stream``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Producer

from pipeline_defs.defs.claimx.settings import ClaimXSettings
from pipeline_defs.defs.eventhouse.settings import EventhouseSettings
from pipeline_defs.defs.xact.settings import XactSettings
from pipeline_defs.domains import PipelineSettings
from pipeline_defs.lib.resources import kafka_resource
from pipeline_defs.lib.settings import section
from pipeline_sim.attachment_host import AttachmentHost
from pipeline_sim.cdc import DEMO_TABLES, CdcSource
from pipeline_sim.cdc_stream import main as cdc_main
from pipeline_sim.claimx_api import ClaimXApiDouble
from pipeline_sim.claimx_events import MALFORMED_CLAIMX_MESSAGES, ClaimXEventSource
from pipeline_sim.claimx_world import ClaimXWorld
from pipeline_sim.events import MALFORMED_MESSAGES, encode, with_failing_attachments, xact_event
from pipeline_sim.http_server import LocalHttpServer
from pipeline_sim.kusto import KustoDouble
from pipeline_sim.kusto import main as kusto_main
from pipeline_sim.tokens import main as token_main

log = logging.getLogger("pipeline_sim")


@dataclass
class Stream:
    """One topic's traffic: how to make an event, its key, and the broken messages to mix in."""

    topic: str
    rate: int
    make: Callable[[], dict]
    key_of: Callable[[dict], bytes]
    malformed: list[bytes]
    recent: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


class KafkaOut:
    """Events produced to the source topics (Kafka, or Event Hub's Kafka endpoint)."""

    def __init__(self, producer: Producer):
        self.producer = producer

    def event(self, stream: Stream, event: dict) -> None:
        self.producer.produce(stream.topic, value=encode(event), key=stream.key_of(event))
        self.producer.poll(0)

    def malformed(self, stream: Stream, value: bytes) -> None:
        self.producer.produce(stream.topic, value=value, key=b"malformed")

    def flush(self) -> None:
        self.producer.flush(10)


class KustoOut:
    """Events ingested into the Kusto double's tables, one extent per table and second (the way
    queued ingestion batches them); a malformed message becomes a row without an id."""

    def __init__(self, double: KustoDouble, tables: dict[str, str]):
        self.double, self.tables = double, tables
        self.pending: dict[str, list[dict]] = {}

    def event(self, stream: Stream, event: dict) -> None:
        self.pending.setdefault(self.tables[stream.topic], []).append(event)

    def malformed(self, stream: Stream, value: bytes) -> None:
        self.event(stream, {"event_type": "unparseable", "raw": value.decode("utf-8", "replace")})

    def flush(self) -> None:
        for table, rows in self.pending.items():
            self.double.ingest(table, rows)
        self.pending = {}


def produce_second(out: KafkaOut | KustoOut, stream: Stream, rng: random.Random, args: argparse.Namespace) -> None:
    for _ in range(stream.rate):
        roll = rng.random()
        if roll < args.malformed_ratio:
            out.malformed(stream, rng.choice(stream.malformed))
            stream.counts["malformed"] += 1
        elif roll < args.malformed_ratio + args.duplicate_ratio and stream.recent:
            out.event(stream, rng.choice(stream.recent))
            stream.counts["duplicates"] += 1
        else:
            event = stream.make()
            stream.recent = ([*stream.recent, event])[-1_000:]
            out.event(stream, event)
        stream.counts["sent"] += 1


async def produce_forever(args: argparse.Namespace) -> None:
    settings = PipelineSettings()
    xact_settings, claimx_settings = section(settings, "xact", XactSettings), section(settings, "claimx", ClaimXSettings)
    rng = random.Random(args.seed)
    host = AttachmentHost(port=args.http_port, file_size=args.file_size, host_name=args.host_name)
    media = AttachmentHost(port=args.media_port, file_size=args.file_size, host_name=args.media_host_name)
    world = ClaimXWorld(media.base_url)
    api = ClaimXApiDouble(world, port=args.claimx_api_port, token=os.environ.get(claimx_settings.api.token_env or "", ""))
    for server in (host, media, api):
        await server.start()
    claimx = ClaimXEventSource(world, rng)

    def claimx_event() -> dict:
        event = claimx.event()
        if rng.random() < args.unknown_project_ratio and event["event_type"] == "PROJECT_CREATED":
            api.not_found(str(event["project_id"]))
        return event

    streams = [
        Stream(
            xact_settings.topics.events,
            args.rate,
            lambda: with_failing_attachments(xact_event(rng, host.base_url), rng),
            lambda e: e["trace_id"].encode(),
            MALFORMED_MESSAGES,
        ),
        Stream(
            claimx_settings.topics.events,
            args.claimx_rate,
            claimx_event,
            lambda e: str(e["project_id"]).encode(),
            MALFORMED_CLAIMX_MESSAGES,
        ),
    ]
    # Debezium change events of the demo Cassandra tables, on the pipeline's own cluster
    cdc, cdc_producer = iter(CdcSource(DEMO_TABLES, rng, live=True)), kafka_resource(settings.kafka).producer()
    servers: list[LocalHttpServer] = [host, media, api]
    if args.source == "eventhouse":
        eventhouse = section(settings, "eventhouse", EventhouseSettings)
        tables = {xact_settings.topics.events: "XactEvents", claimx_settings.topics.events: "ClaimXEvents"}
        tables = {
            topic: eventhouse.tables.get(asset, tables[topic]) for topic, asset in zip(tables, ("xact_events", "claimx_events"))
        }
        double = KustoDouble(port=args.kusto_port, tables=tables.values(), retention_s=6 * 3600)
        await double.start()
        servers.append(double)
        out: KafkaOut | KustoOut = KustoOut(double, tables)
    else:
        out = KafkaOut(kafka_resource(settings.source_kafka).producer())
    log.info(
        f"XACT {args.rate}/s and ClaimX {args.claimx_rate}/s into {args.source}; "
        f"attachments {host.base_url}, ClaimX API {api.base_url}"
    )
    started = time.monotonic()
    try:
        while args.count is None or streams[0].counts["sent"] < args.count:
            second = time.monotonic()
            for stream in streams:
                produce_second(out, stream, rng, args)
            for envelope in itertools.islice(cdc, args.cdc_rate):
                cdc_producer.produce(envelope.topic, value=envelope.value, key=envelope.key)
            out.flush()
            cdc_producer.flush(10)
            if int(second - started) % 10 == 0:
                log.info(" ".join(f"{s.topic}: {dict(s.counts)}" for s in streams) + f" after {second - started:.0f}s")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - second)))
    finally:
        out.flush()
        for running in servers:
            await running.stop()


def main() -> None:
    if sys.argv[1:2] == ["kusto"]:  # python -m pipeline_sim kusto --port 8768: the Kusto double alone
        kusto_main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["cdc"]:  # python -m pipeline_sim cdc --rate 1000: Debezium change events alone
        cdc_main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["token"]:  # python -m pipeline_sim token --scope S: a token for the Event Hub stand-in
        token_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        prog="pipeline-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=20, help="events per second")
    parser.add_argument("--count", type=int, default=None, help="stop after this many (default: never)")
    parser.add_argument("--duplicate-ratio", type=float, default=0.05)
    parser.add_argument("--malformed-ratio", type=float, default=0.02)
    parser.add_argument("--http-port", type=int, default=8765)
    parser.add_argument(
        "--host-name",
        default="attachments.sim.test",
        help="host name in attachment URLs; the local config resolves it to 127.0.0.1",
    )
    parser.add_argument("--file-size", type=int, default=64 * 1024, help="bytes per attachment")
    parser.add_argument("--claimx-rate", type=int, default=5, help="ClaimX events per second")
    parser.add_argument("--claimx-api-port", type=int, default=8766)
    parser.add_argument("--media-port", type=int, default=8767)
    parser.add_argument("--media-host-name", default="media.claimx.sim.test")
    parser.add_argument("--unknown-project-ratio", type=float, default=0.05, help="new ClaimX projects the API 404s")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--source",
        choices=["kafka", "eventhouse"],
        default="kafka",
        help="where events go: the source topics (kafka; Event Hub is Kafka too), or the tables of a Kusto double "
        "the Eventhouse poller reads (eventhouse)",
    )
    parser.add_argument("--kusto-port", type=int, default=8768, help="the Kusto double's port (--source eventhouse)")
    parser.add_argument("--cdc-rate", type=int, default=10, help="Debezium change events per second (cassandra.claims.*)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(produce_forever(args))


if __name__ == "__main__":
    main()
