"""Sample XACT and ClaimX traffic for the local stack: ``pipeline-sim`` (``python -m pipeline_sim``).

Produces realistic XACT events at ``--rate`` per second and ClaimX events at ``--claimx-rate``,
resends some (``--duplicate-ratio``), sends some broken ones (``--malformed-ratio``), and serves
what the pipeline fetches from hosts on 127.0.0.1: the XACT attachment host (a few URLs failing
the way real hosts fail: 404, a 503 once, an HTML page instead of a PDF), the ClaimX API double
(``--claimx-api-port``) and the ClaimX media host its presigned links point at. A few ClaimX
events name a project the API does not know (404), so the enrichment DLQ has something to show.
"""

from __future__ import annotations

import argparse
import asyncio
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
from pipeline_defs.defs.xact.settings import XactSettings
from pipeline_defs.domains import PipelineSettings
from pipeline_defs.lib.resources import kafka_resource
from pipeline_defs.lib.settings import section
from pipeline_sim.attachment_host import AttachmentHost
from pipeline_sim.claimx_api import ClaimXApiDouble
from pipeline_sim.claimx_events import MALFORMED_CLAIMX_MESSAGES, ClaimXEventSource
from pipeline_sim.claimx_world import ClaimXWorld
from pipeline_sim.events import MALFORMED_MESSAGES, encode, with_failing_attachments, xact_event
from pipeline_sim.kusto import main as kusto_main

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


def produce_second(producer: Producer, stream: Stream, rng: random.Random, args: argparse.Namespace) -> None:
    for _ in range(stream.rate):
        roll = rng.random()
        if roll < args.malformed_ratio:
            producer.produce(stream.topic, value=rng.choice(stream.malformed), key=b"malformed")
            stream.counts["malformed"] += 1
        elif roll < args.malformed_ratio + args.duplicate_ratio and stream.recent:
            event = rng.choice(stream.recent)
            producer.produce(stream.topic, value=encode(event), key=stream.key_of(event))
            stream.counts["duplicates"] += 1
        else:
            event = stream.make()
            stream.recent = ([*stream.recent, event])[-1_000:]
            producer.produce(stream.topic, value=encode(event), key=stream.key_of(event))
        stream.counts["sent"] += 1
        producer.poll(0)


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
    producer = kafka_resource(settings.source_kafka).producer()
    log.info(f"XACT {args.rate}/s and ClaimX {args.claimx_rate}/s; attachments {host.base_url}, ClaimX API {api.base_url}")
    started = time.monotonic()
    try:
        while args.count is None or streams[0].counts["sent"] < args.count:
            second = time.monotonic()
            for stream in streams:
                produce_second(producer, stream, rng, args)
            producer.flush(10)
            if int(second - started) % 10 == 0:
                log.info(" ".join(f"{s.topic}: {dict(s.counts)}" for s in streams) + f" after {second - started:.0f}s")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - second)))
    finally:
        producer.flush(10)
        for server in (host, media, api):
            await server.stop()


def main() -> None:
    if sys.argv[1:2] == ["kusto"]:  # python -m pipeline_sim kusto --port 8768: the Kusto double alone
        kusto_main(sys.argv[2:])
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(produce_forever(args))


if __name__ == "__main__":
    main()
