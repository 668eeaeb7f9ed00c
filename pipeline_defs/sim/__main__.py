"""Sample XACT traffic for the local stack: ``python -m pipeline_defs.sim``.

Produces realistic events to the XACT events topic at ``--rate`` per second, resends some
(``--duplicate-ratio``), sends some broken ones (``--malformed-ratio``), and serves the
attachment URLs it emits from an HTTP host on 127.0.0.1, a few of them failing the way real
hosts fail (404, a 503 once, an HTML page instead of a PDF).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time

from pipeline_defs.lib.resources import kafka_resource
from pipeline_defs.lib.settings import PipelineSettings
from pipeline_defs.sim.attachment_host import AttachmentHost
from pipeline_defs.sim.events import MALFORMED_MESSAGES, encode, with_failing_attachments, xact_event

log = logging.getLogger("pipeline_defs.sim")


async def produce_forever(args: argparse.Namespace) -> None:
    settings = PipelineSettings()
    host = AttachmentHost(port=args.http_port, file_size=args.file_size, host_name=args.host_name)
    await host.start()
    producer = kafka_resource(settings.source_kafka).producer()
    topic = settings.topics.xact_events
    rng = random.Random(args.seed)
    recent: list[dict] = []
    sent = duplicates = malformed = 0
    log.info(f"producing to {topic} at {args.rate}/s; attachments from {host.base_url}")
    started = time.monotonic()
    try:
        while args.count is None or sent < args.count:
            second = time.monotonic()
            for _ in range(args.rate):
                roll = rng.random()
                if roll < args.malformed_ratio:
                    producer.produce(topic, value=rng.choice(MALFORMED_MESSAGES), key=b"malformed")
                    malformed += 1
                elif roll < args.malformed_ratio + args.duplicate_ratio and recent:
                    event = rng.choice(recent)
                    producer.produce(topic, value=encode(event), key=event["trace_id"].encode())
                    duplicates += 1
                else:
                    event = with_failing_attachments(xact_event(rng, host.base_url), rng)
                    recent = (recent + [event])[-1_000:]
                    producer.produce(topic, value=encode(event), key=event["trace_id"].encode())
                sent += 1
                producer.poll(0)
            producer.flush(10)
            if sent % (args.rate * 10) < args.rate:
                log.info(f"sent {sent} ({duplicates} duplicates, {malformed} malformed) in {time.monotonic() - started:.0f}s")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - second)))
    finally:
        producer.flush(10)
        await host.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(produce_forever(args))


if __name__ == "__main__":
    main()
