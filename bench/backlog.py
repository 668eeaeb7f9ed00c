"""A cold-start backlog: events with attachments, already waiting in Kafka when the daemon
starts, until every event is in xact_events and every attachment in xact_attachments."""

from __future__ import annotations

import time

from bench.attachments import HOST
from bench.daemon import pipeline, wait_until
from bench.ingest import event_bytes, produce
from pipeline_defs_tests.support.stack import LocalStack
from pipeline_sim.attachment_host import AttachmentHost


def backlog(stack: LocalStack, events: int = 100_000, per_event: int = 2, files_on_azurite: bool = False) -> dict:
    host = AttachmentHost(host_name=HOST, file_size=64 * 1024).start_in_process()
    try:
        with pipeline(stack, max_events_per_run=100_000, files_on_azurite=files_on_azurite) as run:

            def with_attachments(i: int) -> tuple[bytes, bytes]:
                urls = [host.url(f"files/{run.name}/{i}/{n}.pdf") for n in range(per_event)]
                return event_bytes(i, attachments=urls)

            produce(run.resources["kafka"], run.topics.xact.events, events, make=with_attachments)
            started = time.monotonic()
            run.start_daemon()
            series: list[tuple[float, int, int]] = []

            def done() -> bool:
                counts = (run.count("xact_events"), run.count("xact_attachments"))
                series.append((round(time.monotonic() - started, 1), *counts))
                return counts == (events, events * per_event)

            wait_until(done, timeout_s=1200, every_s=2.0)
            seconds = series[-1][0]
            events_done = next((t for t, e, _ in series if e >= events), None)
    finally:
        host.stop_process()
    return {
        "events": events,
        "attachments": events * per_event,
        "attachment_kib": 64,
        "store": "azurite" if files_on_azurite else "local",
        "events_landed": series[-1][1],
        "attachments_landed": series[-1][2],
        "seconds_all_events": events_done,
        "seconds_all_attachments": seconds,
        "attachments_per_s": round(series[-1][2] / seconds, 1),
        "series": series,
    }
