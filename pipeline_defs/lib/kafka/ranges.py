"""Kafka offset ranges: the unit of work a sensor plans and a run executes.

Pure functions only. A range is half-open, ``[start, end)``. The sensor's cursor holds,
per partition, the next offset it has not yet planned; it never commits consumer-group
offsets (the run does, after its Delta commit).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RANGES_TAG = "kafka/ranges"
TOPIC_TAG = "kafka/topic"
EVENTS_TAG = "kafka/planned_events"
SLOT_TAG = "kafka/writer_slot"  # <topic>:<slot>/<writers>; the run queue runs one per value at a time


@dataclass(frozen=True, order=True)
class OffsetRange:
    topic: str
    partition: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.partition < 0 or self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid offset range {self}")

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class PartitionState:
    """What the broker reports for one partition."""

    low: int
    high: int


def encode_ranges(ranges: Iterable[OffsetRange]) -> str:
    """Tag value such as ``0:100-200,3:7-9`` (partition:start-end, sorted by partition)."""
    return ",".join(f"{r.partition}:{r.start}-{r.end}" for r in sorted(ranges))


def decode_ranges(topic: str, value: str) -> list[OffsetRange]:
    ranges = []
    for item in filter(None, value.split(",")):
        try:
            partition, span = item.split(":")
            start, end = span.split("-")
            ranges.append(OffsetRange(topic, int(partition), int(start), int(end)))
        except ValueError as exc:
            raise ValueError(f"malformed {RANGES_TAG} tag item {item!r}") from exc
    return ranges


def run_key(topic: str, ranges: Iterable[OffsetRange]) -> str:
    """Deterministic: the same planned ranges always give the same key, so Dagster
    never launches a range twice even if a tick is evaluated again."""
    return f"{topic}@{encode_ranges(ranges)}"


def decode_cursor(cursor: str | None) -> dict[str, dict[int, int]]:
    """Per topic, the next offset not yet planned of each partition; ``ValueError`` if the
    cursor is not one this module wrote."""
    if not cursor:
        return {}
    try:
        topics = json.loads(cursor)["topics"]
        decoded = {str(t): {int(p): int(o) for p, o in offsets.items()} for t, offsets in topics.items()}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise ValueError(f"malformed sensor cursor: {type(exc).__name__}") from None
    if any(p < 0 or o < 0 for offsets in decoded.values() for p, o in offsets.items()):
        raise ValueError("malformed sensor cursor: negative partition or offset")
    return decoded


def encode_cursor(next_offsets: Mapping[str, Mapping[int, int]]) -> str:
    return json.dumps(
        {"topics": {t: {str(p): o for p, o in sorted(offsets.items())} for t, offsets in sorted(next_offsets.items())}}
    )


@dataclass(frozen=True)
class Plan:
    runs: list[list[OffsetRange]]
    next_offsets: dict[int, int]
    skipped_to_low_watermark: dict[int, int]  # partition -> offsets lost to retention

    @property
    def planned_events(self) -> int:
        return sum(r.size for run in self.runs for r in run)


def plan_runs(
    topic: str,
    next_offsets: Mapping[int, int],
    partitions: Mapping[int, PartitionState],
    max_events_per_run: int,
    max_runs: int,
) -> Plan:
    """Split the unplanned offsets of every partition into at most ``max_runs`` runs of at
    most ``max_events_per_run`` events each. Each run may span several partitions; each
    partition appears at most once per run and its ranges stay contiguous across runs.

    ``next_offsets`` must hold a start for every partition in ``partitions``.
    """
    if max_events_per_run < 1 or max_runs < 1:
        raise ValueError("max_events_per_run and max_runs must be positive")
    cursor: dict[int, int] = {}
    lost: dict[int, int] = {}
    for partition, state in partitions.items():
        start = next_offsets[partition]
        if start < state.low:  # retention removed offsets we had not read yet
            lost[partition] = state.low - start
            start = state.low
        cursor[partition] = start

    runs: list[list[OffsetRange]] = []
    while len(runs) < max_runs:
        backlog = {p: partitions[p].high - cursor[p] for p in partitions}
        takes = _fair_share(backlog, max_events_per_run)
        if not takes:
            break
        runs.append([OffsetRange(topic, p, cursor[p], cursor[p] + n) for p, n in sorted(takes.items())])
        for p, n in takes.items():
            cursor[p] += n
    merged = dict(next_offsets)
    merged.update(cursor)
    return Plan(runs=runs, next_offsets=merged, skipped_to_low_watermark=lost)


def plan_disjoint_runs(
    topic: str,
    next_offsets: Mapping[int, int],
    partitions: Mapping[int, PartitionState],
    max_events_per_run: int,
    max_runs: int,
    writers: int,
    busy: Iterable[int] = (),
    last: Iterable[int] = (),
) -> Plan:
    """``plan_runs`` for a table that takes ``writers`` concurrent writer runs. With one,
    runs may share partitions: they queue for the table's pool, and the next boots while the
    last writes. With more, partition p belongs to slot ``p % writers``, each run takes one
    slot, and a slot holding a ``busy`` partition (one a run in flight was planned on) waits,
    so the runs that write at once never read the same partition: a second run on a partition
    would start at the table's watermark, behind the first run's uncommitted range, and read
    it again. The slots take turns: the one after the ``last`` run's slot goes first."""
    if writers <= 1:
        return plan_runs(topic, next_offsets, partitions, max_events_per_run, max_runs)
    taken = {p % writers for p in busy}
    after = max((p % writers for p in last), default=writers - 1)
    ordered = sorted((s for s in range(writers) if s not in taken), key=lambda s: (s - after - 1) % writers)
    runs: list[list[OffsetRange]] = []
    lost: dict[int, int] = {}
    offsets = dict(next_offsets)
    for slot in ordered:
        if len(runs) == max_runs:
            break
        share = {p: st for p, st in partitions.items() if p % writers == slot}
        plan = plan_runs(topic, offsets, share, max_events_per_run, 1)
        runs += plan.runs
        offsets, lost = plan.next_offsets, {**lost, **plan.skipped_to_low_watermark}
    return Plan(runs=runs, next_offsets=offsets, skipped_to_low_watermark=lost)


def writer_slot(ranges: Iterable[OffsetRange], writers: int) -> int:
    """The slot of a run ``plan_disjoint_runs`` planned (all its partitions share it)."""
    return next(iter(ranges)).partition % writers


def _fair_share(backlog: Mapping[int, int], budget: int) -> dict[int, int]:
    """Water-fill ``budget`` over partitions so a hot partition cannot starve the others."""
    takes: dict[int, int] = {}
    waiting = sorted(p for p, n in backlog.items() if n > 0)
    while budget > 0 and waiting:
        share = max(1, budget // len(waiting))
        still_waiting = []
        for p in waiting:
            take = min(share, backlog[p] - takes.get(p, 0), budget)
            takes[p] = takes.get(p, 0) + take
            budget -= take
            if backlog[p] - takes[p] > 0:
                still_waiting.append(p)
            if budget == 0:
                break
        waiting = still_waiting
    return {p: n for p, n in takes.items() if n > 0}
