"""Attachment throughput at 1, 10 and 50 concurrent downloads, through the pipeline's own
code (SSRF-safe downloader, streaming, checksum, upload to Azurite), against the local host."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, date, datetime

from pipeline_defs.defs.xact.models import XACT_ATTACHMENTS, XactDownloadTask
from pipeline_defs.lib.attachments.downloader import AttachmentHttpResource
from pipeline_defs.lib.attachments.file_store import FileStoreResource
from pipeline_defs.lib.attachments.inventory import AttachmentInventorySink
from pipeline_defs.lib.dlq.records import DeadLetterTopic
from pipeline_defs.lib.ingest.retries import Retries
from pipeline_defs.lib.ingest.sink import BatchContext, IngestMode, IngestReport
from pipeline_defs.lib.ingest.tasks import SourceEvent
from pipeline_defs.lib.settings import DownloadSettings, StorageSettings
from pipeline_defs_tests.support.stack import LocalStack
from pipeline_sim.attachment_host import AttachmentHost

HOST = "attachments.bench"


def bench_http(concurrency: int) -> AttachmentHttpResource:
    return AttachmentHttpResource(
        settings=DownloadSettings(
            allowed_hosts=[HOST],
            allow_http=True,
            allowed_ports=[],
            loopback_hosts=[HOST],
            extra_hosts={HOST: "127.0.0.1"},
            concurrency=concurrency,
        )
    )


def tasks_for(host: AttachmentHost, count: int, path: str = "files") -> list[XactDownloadTask]:
    now = datetime.now(UTC)
    batch = uuid.uuid4().hex[:8]
    return [
        XactDownloadTask(
            trace_id=f"bench-{batch}-{i}",
            attachment_url=host.url(f"{path}/{batch}/{i}.pdf"),
            status_subtype="documentsReceived",
            assignment_id="A1",
            event_timestamp=now,
            source=SourceEvent(topic="bench", partition=0, offset=i, ingestion_date=now.date()),
        )
        for i in range(count)
    ]


def store_all(sink: AttachmentInventorySink, tasks: list[XactDownloadTask]) -> tuple[IngestReport, float]:
    context = BatchContext(
        group_id="bench", run_id="bench", ingestion_date=date.today(), mode=IngestMode.BACKFILL, report=IngestReport()
    )
    started = time.perf_counter()
    sink.process([(task, None) for task in tasks], context)
    return context.report, time.perf_counter() - started


def concurrency_sweep(stack: LocalStack, file_size: int = 64 * 1024) -> list[dict]:
    """Files/s and MB/s from the local host through the downloader into each store."""
    host = AttachmentHost(host_name=HOST, file_size=file_size).start_in_process()
    kafka = stack.kafka()
    stores = {
        "local": FileStoreResource(storage=StorageSettings(files_root=str(stack.runs_dir / "downloads"))),
        "azurite": stack.azurite_files(),
    }
    results = []
    try:
        for (store, files), (concurrency, count) in itertools.product(stores.items(), ((1, 200), (10, 1_000), (50, 2_000))):
            sink = AttachmentInventorySink(
                spec=XACT_ATTACHMENTS,
                http=bench_http(concurrency),
                files=files,
                retries=Retries(kafka, [], DeadLetterTopic(kafka, "bench.unused", files)),
            )
            report, seconds = store_all(sink, tasks_for(host, count))
            stored = report.counts["files_stored"]
            results.append(
                {
                    "store": store,
                    "concurrency": concurrency,
                    "files": stored,
                    "failures": count - stored,
                    "file_kib": file_size // 1024,
                    "seconds": round(seconds, 2),
                    "files_per_s": round(stored / seconds, 1),
                    "mb_per_s": round(report.counts["bytes_stored"] / seconds / 1e6, 1),
                }
            )
            print(f"[bench] downloads x{concurrency}: {results[-1]}", flush=True)
    finally:
        host.stop_process()
    return results
