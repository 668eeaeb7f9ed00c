"""The README run command's simulator, as a process against the test broker."""

import argparse
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import replace
from typing import Optional, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel

from pipeline_defs.defs.claimx.models import ClaimXEvent
from pipeline_defs.defs.xact.models import XactEvent
from pipeline_defs.lib.cdc.envelope import parse_change
from pipeline_defs.lib.dlq.records import RejectedRecord
from pipeline_defs.lib.validation.fields import parsed
from pipeline_sim.__main__ import KustoOut, Stream, produce_second
from pipeline_sim.cdc import DEMO_TABLES
from pipeline_sim.events import xact_event
from pipeline_sim.kusto import KustoDouble

XACT_COUNT = 200


def test_the_simulator_sends_events_duplicates_and_malformed_messages(test_stack, topics, consume_all):
    env = {
        **os.environ,
        "PIPELINE_CONFIG_FILE": "/nonexistent.yaml",
        "PIPELINE_SOURCE_KAFKA__BOOTSTRAP_SERVERS": test_stack.bootstrap_servers,
        "PIPELINE_XACT__TOPICS__EVENTS": topics.xact.events,
        "PIPELINE_CLAIMX__TOPICS__EVENTS": topics.claimx.events,
    }
    ports = ["--http-port", "0", "--claimx-api-port", "0", "--media-port", "0"]
    args = [
        "--rate",
        "100",
        "--count",
        str(XACT_COUNT),
        "--claimx-rate",
        "50",
        "--duplicate-ratio",
        "0.2",
        "--seed",
        "7",
        "--cdc-rate",
        "0",
    ]
    subprocess.run([sys.executable, "-m", "pipeline_sim", *args, *ports], env=env, timeout=60, check=True)

    xact = [_valid(XactEvent, m.value()) for m in consume_all(topics.xact.events)]
    assert len(xact) == XACT_COUNT
    events = [e for e in xact if e is not None]
    assert 0 < XACT_COUNT - len(events) < XACT_COUNT * 0.1  # ~2 % rejected by the pipeline's own schema
    resent = Counter(e.trace_id for e in events)
    assert 0 < sum(n - 1 for n in resent.values()) < XACT_COUNT * 0.35  # ~20 % resent
    urls = [url for e in events for url in e.attachments or []]
    assert urls and {urlsplit(u).hostname for u in urls} == {"attachments.sim.test"}

    claimx = [_valid(ClaimXEvent, m.value()) for m in consume_all(topics.claimx.events)]
    assert len([e for e in claimx if e is not None]) > len(claimx) * 0.8


def test_the_cdc_mode_sends_debezium_envelopes_of_now(test_stack, kafka, consume_all):
    keyspace = f"sim_{uuid.uuid4().hex[:8]}"
    tables = tuple(replace(t, keyspace=keyspace) for t in DEMO_TABLES)
    kafka.create_topics([t.topic for t in tables], 1)
    env = {
        **os.environ,
        "PIPELINE_CONFIG_FILE": "/nonexistent.yaml",
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": test_stack.bootstrap_servers,
    }
    args = ["cdc", "--rate", "200", "--count", "300", "--seed", "5", "--keyspace", keyspace, "--with-schema"]
    started_us = time.time_ns() // 1000
    subprocess.run([sys.executable, "-m", "pipeline_sim", *args], env=env, timeout=120, check=True)
    outcomes: Counter[str] = Counter()
    for table in tables:
        for message in consume_all(table.topic):
            try:
                event = parse_change(message.value(), message.key(), table)
            except RejectedRecord:
                outcomes["rejected"] += 1
                continue
            outcomes["tombstone" if event is None else "event"] += 1
            assert event is None or event.writetime_us >= started_us - 10_000_000  # writetimes of now, not of the past
    assert sum(outcomes.values()) == 300 and outcomes["event"] > 250 and outcomes["rejected"] > 0


Model = TypeVar("Model", bound=BaseModel)


def _valid(model: type[Model], value: bytes) -> Optional[Model]:
    try:
        return parsed(model, value)
    except RejectedRecord:
        return None


def test_with_the_eventhouse_as_source_events_become_rows_of_the_kusto_double():
    double = KustoDouble(tables=["XactEvents"])
    out = KustoOut(double, {"events.raw": "XactEvents"})
    rng = random.Random(3)
    stream = Stream("events.raw", 50, lambda: xact_event(rng, "https://attachments.sim.test"), lambda e: b"", [b"\xff{"])
    args = argparse.Namespace(malformed_ratio=0.1, duplicate_ratio=0.1)
    produce_second(out, stream, rng, args)
    out.flush()  # one extent per table and second
    assert double.stats()["rows"] == {"XactEvents": 50}
    assert stream.counts["malformed"] > 0 and stream.counts["duplicates"] > 0
