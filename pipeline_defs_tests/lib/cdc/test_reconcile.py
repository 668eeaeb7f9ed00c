"""The reconciliation's pure parts (no services): which offsets it reads, which event of a key is
the newest, which keys it samples, and how each key's event and row are judged."""

from __future__ import annotations

from typing import Optional

import pytest

from pipeline_defs.lib.cdc.model import Cell, ChangeEvent, ColumnSpec, NewColumn, Op, TableSpec
from pipeline_defs.lib.cdc.reconcile import INCONCLUSIVE, MATCHED, MISMATCHED, Latest, Observed, Tail, classify, tail_ranges
from pipeline_defs.lib.kafka.ranges import OffsetRange, PartitionState

SPEC = TableSpec(
    "claims",
    "notes",
    (ColumnSpec("claim", "int"), ColumnSpec("note", "int"), ColumnSpec("body", "text"), ColumnSpec("n", "double")),
    ("claim", "note"),
)
NOW = 2_000_000_000_000_000


def change(claim: int, note: Optional[int], wt: int, op: Op = Op.UPDATE, **cells: object) -> ChangeEvent:
    key = {"claim": claim, "note": note}
    prefix = {"claim": claim} if note is None else None
    return ChangeEvent(op, SPEC, key, {n: Cell(v) for n, v in cells.items()}, wt, range_delete=prefix)


def tail_of(*events: ChangeEvent) -> Tail:
    tail = Tail(SPEC)
    for offset, event in enumerate(events):
        tail.add(event, (SPEC.topic, 0, offset))
    return tail


def test_the_tail_ends_at_the_applied_offsets_and_stays_in_the_log() -> None:
    states = {0: PartitionState(0, 100), 1: PartitionState(40, 100), 2: PartitionState(0, 5), 3: PartitionState(0, 9)}
    applied = {0: 100, 1: 50, 2: 30, 3: 0, 4: 10}  # 2: the topic was recreated; 3: nothing applied; 4: gone
    assert tail_ranges("t", applied, states, 20) == [
        OffsetRange("t", 0, 80, 100),
        OffsetRange("t", 1, 40, 50),
        OffsetRange("t", 2, 0, 5),
    ]


def test_the_newest_writetime_wins_whatever_the_offset_and_a_delete_wins_a_tie() -> None:
    tail = tail_of(change(1, 1, 300, body="new"), change(1, 1, 200, body="late and older"))
    (latest,) = tail.latest.values()
    assert latest.event.writetime_us == 300 and latest.source[2] == 0
    tied = tail_of(change(1, 1, 300, body="a"), change(1, 1, 300, Op.DELETE), change(1, 1, 300, body="b"))
    (latest,) = tied.latest.values()
    assert latest.event.op is Op.DELETE and not latest.tie


def test_two_different_upserts_at_one_writetime_are_a_tie_a_duplicate_is_not() -> None:
    duplicate = tail_of(change(1, 1, 300, body="a"), change(1, 1, 300, body="a"))
    assert not next(iter(duplicate.latest.values())).tie
    different = tail_of(change(1, 1, 300, body="a"), change(1, 1, 300, body="b"))
    assert next(iter(different.latest.values())).tie
    newer = tail_of(change(1, 1, 300, body="a"), change(1, 1, 300, body="b"), change(1, 1, 301, body="c"))
    assert not next(iter(newer.latest.values())).tie


def test_range_deletes_touch_the_keys_under_their_prefix() -> None:
    tail = tail_of(change(1, 1, 100, body="x"), change(2, 1, 100, body="y"), change(1, None, 50, Op.DELETE))
    touched = {latest.event.key["claim"]: tail.range_deleted(latest) for latest in tail.latest.values()}
    assert touched == {1: True, 2: False} and len(tail.latest) == 2


def test_the_sample_is_bounded_and_reproducible_with_a_seed() -> None:
    tail = tail_of(*(change(i, 1, 100 + i, body="x") for i in range(50)))
    first = [latest.event.key["claim"] for latest in tail.sample(10, seed=7)]
    assert len(first) == len(set(first)) == 10
    assert first == [latest.event.key["claim"] for latest in tail.sample(10, seed=7)]
    assert len(tail.sample(500)) == 50


def judge(event: ChangeEvent, seen: Observed, *, tie: bool = False, range_deleted: bool = False) -> tuple[str, str, tuple]:
    return classify(Latest(event, (SPEC.topic, 0, 0), tie), seen, range_deleted=range_deleted, now_us=NOW)


UPSERT = change(1, 1, 500, body="x")
DELETE = change(1, 1, 500, Op.DELETE)


@pytest.mark.parametrize(
    ("event", "seen", "expected"),
    [
        # an upsert: the row holds its writetime and cells
        (UPSERT, Observed(500), (MATCHED, "")),
        (UPSERT, Observed(500, differs=("body",)), (MISMATCHED, "values_differ")),
        (UPSERT, Observed(400), (MISMATCHED, "lost_update")),
        (UPSERT, Observed(), (MISMATCHED, "row_missing")),
        (UPSERT, Observed(None, tombstone=400), (MISMATCHED, "row_missing")),
        (UPSERT, Observed(400, deleted=True), (MISMATCHED, "row_deleted")),
        # what the tail cannot settle
        (UPSERT, Observed(600), (INCONCLUSIVE, "row_newer_than_tail")),
        (UPSERT, Observed(600, differs=("body",)), (INCONCLUSIVE, "row_newer_than_tail")),
        (UPSERT, Observed(None, tombstone=500), (INCONCLUSIVE, "deleted_at_or_after_event")),
        (UPSERT, Observed(500, deleted=True), (INCONCLUSIVE, "deleted_at_or_after_event")),
        (UPSERT, Observed(refused=True), (INCONCLUSIVE, "refused_by_sink")),
        # a delete: no row, or a row marked deleted no older than it
        (DELETE, Observed(), (MATCHED, "")),
        (DELETE, Observed(500, deleted=True), (MATCHED, "")),
        (DELETE, Observed(500), (MISMATCHED, "delete_not_applied")),
        (DELETE, Observed(400), (MISMATCHED, "delete_not_applied")),
        (DELETE, Observed(400, deleted=True), (MISMATCHED, "lost_update")),
        (DELETE, Observed(600), (INCONCLUSIVE, "row_newer_than_tail")),
    ],
)
def test_each_key_is_judged_by_its_newest_event_and_row(event: ChangeEvent, seen: Observed, expected: tuple) -> None:
    assert judge(event, seen)[:2] == expected


def test_mismatches_name_the_columns_that_differ_and_a_lost_update_the_writetime() -> None:
    assert judge(UPSERT, Observed(500, differs=("body", "n")))[2] == ("body", "n")
    assert judge(UPSERT, Observed(400))[2] == ("_cdc_writetime",)


def test_ties_range_deletes_and_expired_ttls_are_inconclusive_not_mismatches() -> None:
    assert judge(UPSERT, Observed(), tie=True)[:2] == (INCONCLUSIVE, "writetime_tie")
    assert judge(UPSERT, Observed(), range_deleted=True)[:2] == (INCONCLUSIVE, "range_delete_in_tail")
    expired = ChangeEvent(Op.UPDATE, SPEC, {"claim": 1, "note": 1}, {"body": Cell("x", expires_at_us=NOW - 1)}, 500)
    assert judge(expired, Observed())[:2] == (INCONCLUSIVE, "ttl_expired")
    live = ChangeEvent(Op.UPDATE, SPEC, {"claim": 1, "note": 1}, {"body": Cell("x", expires_at_us=NOW + 1)}, 500)
    assert judge(live, Observed())[:2] == (MISMATCHED, "row_missing")
    assert judge(expired, Observed(500))[:2] == (MATCHED, "")  # not purged yet: still compared


def test_new_columns_count_in_a_tie() -> None:
    base = change(1, 1, 300, body="a")
    other = ChangeEvent(Op.UPDATE, SPEC, base.key, base.cells, 300, new_columns=(NewColumn("flag", "boolean", True),))
    assert next(iter(tail_of(base, other).latest.values())).tie
