"""What validating and building the rows of a 100k-event batch costs: the per-record path
(pydantic, one message at a time) against the columnar fast path, CPU seconds of this process."""

from __future__ import annotations

import dataclasses
import time
from datetime import date

from bench.ingest import event_bytes
from pipeline_defs.defs.xact.models import XACT_EVENTS, xact_download_task_records
from pipeline_defs.lib.ingest.event_log import EventLogSink
from pipeline_defs.lib.ingest.sink import BatchContext, IngestMode, IngestReport


class _Message:
    """A consumed message as the sink reads it."""

    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b""

    def headers(self) -> list:
        return []

    def topic(self) -> str:
        return "events.raw"

    def partition(self) -> int:
        return self._offset % 6

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_764_547_200_000


class _Nowhere:
    def send(self, records) -> int:
        return len(list(records))


def validation_cost(count: int = 100_000, repeats: int = 3) -> dict:
    messages = [_Message(event_bytes(i)[0], i) for i in range(count)]
    figures = {}
    for name, spec in (("per_record", dataclasses.replace(XACT_EVENTS, columnar=None)), ("columnar", XACT_EVENTS)):
        best = float("inf")
        for _ in range(repeats):
            sink = EventLogSink(
                spec=spec,
                dead_letters=_Nowhere(),  # type: ignore[arg-type]  # rows only: nothing is rejected
                follow_up=_Nowhere(),  # type: ignore[arg-type]
                follow_ups=xact_download_task_records,
            )
            context = BatchContext("bench", "bench", date(2026, 12, 1), IngestMode.STREAM, IngestReport())
            started = time.process_time()
            rows = sink.rows_for(messages, context)  # type: ignore[arg-type]  # only what the sink reads
            best = min(best, time.process_time() - started)
            assert rows.num_rows == count
        figures[f"{name}_cpu_s"] = round(best, 3)
    figures["events"] = count
    figures["ratio"] = round(figures["columnar_cpu_s"] / figures["per_record_cpu_s"], 3)
    return figures
