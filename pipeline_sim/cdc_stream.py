"""``pipeline-sim cdc``: the Debezium Cassandra connector's change events alone, at a steady rate,
onto ``cassandra.<keyspace>.<table>`` of the pipeline's cluster (the settings' ``kafka``), for
the CDC demo when the connector itself is not at hand.

    python -m pipeline_sim cdc --rate 1000 --count 60000 --with-schema --dirty-rate 0.01
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections import Counter
from dataclasses import replace
from typing import Optional

from pipeline_defs.domains import PipelineSettings
from pipeline_defs.lib.resources import kafka_resource
from pipeline_sim.cdc import DEMO_TABLES, CdcSource

log = logging.getLogger("pipeline_sim.cdc")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="pipeline-sim cdc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=100, help="change events per second")
    parser.add_argument("--count", type=int, default=None, help="stop after this many (default: never)")
    parser.add_argument("--with-schema", action="store_true", help="the JSON converter with schemas.enable=true")
    parser.add_argument("--dirty-rate", type=float, default=0.02, help="share of broken records")
    parser.add_argument("--evolve-after", type=int, default=None, help="add a column to claims.policies after this many")
    parser.add_argument("--keyspace", default=None, help="the demo tables under another keyspace (default: claims)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    tables = tuple(replace(t, keyspace=args.keyspace) for t in DEMO_TABLES) if args.keyspace else DEMO_TABLES
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    source = CdcSource(
        tables,
        random.Random(args.seed),
        with_schema=args.with_schema,
        dirty_rate=args.dirty_rate,
        evolve_after=args.evolve_after,
        live=True,
    )
    producer = kafka_resource(PipelineSettings().kafka).producer()
    kinds: Counter[str] = Counter()
    started = time.monotonic()
    while args.count is None or source.sent < args.count:
        second = time.monotonic()
        for _ in range(args.rate if args.count is None else min(args.rate, args.count - source.sent)):
            envelope = source.next()
            producer.produce(envelope.topic, value=envelope.value, key=envelope.key)
            producer.poll(0)
            kinds[envelope.kind] += 1
        producer.flush(30)
        if int(second - started) % 10 == 0:
            log.info(f"{source.sent} change events after {second - started:.0f}s: {dict(kinds)}")
        time.sleep(max(0.0, 1.0 - (time.monotonic() - second)))
    log.info(f"sent {source.sent} change events: {dict(kinds)}")
