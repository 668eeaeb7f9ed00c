import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_defs.lib.kafka.ranges import (
    OffsetRange,
    PartitionState,
    decode_cursor,
    decode_ranges,
    encode_cursor,
    encode_ranges,
    plan_disjoint_runs,
    plan_runs,
    run_key,
)


def test_ranges_round_trip_through_the_tag_and_sort_by_partition():
    ranges = [OffsetRange("t", 3, 7, 9), OffsetRange("t", 0, 100, 200)]
    assert encode_ranges(ranges) == "0:100-200,3:7-9"
    assert decode_ranges("t", encode_ranges(ranges)) == sorted(ranges)


@pytest.mark.parametrize("bad", ["0:100", "x:1-2", "0:5-1", "0-1:2"])
def test_malformed_range_tags_are_rejected(bad):
    with pytest.raises(ValueError):
        decode_ranges("t", bad)


def test_run_key_is_deterministic_and_order_independent():
    a = [OffsetRange("t", 0, 0, 10), OffsetRange("t", 1, 5, 6)]
    assert run_key("t", a) == run_key("t", list(reversed(a))) == "t@0:0-10,1:5-6"
    assert run_key("t", a) != run_key("t", [OffsetRange("t", 0, 0, 11), a[1]])


def test_cursor_round_trips_per_topic_and_starts_empty():
    assert decode_cursor(None) == {}
    cursor = {"a": {2: 10, 0: 4}, "b.retry.5m": {1: 7}}
    assert decode_cursor(encode_cursor(cursor)) == cursor


def test_plan_bounds_events_per_run_and_runs_per_tick_and_stays_contiguous():
    states = {p: PartitionState(0, 1_000) for p in range(3)}
    plan = plan_runs("t", {0: 0, 1: 0, 2: 0}, states, max_events_per_run=300, max_runs=4)

    assert len(plan.runs) == 4
    assert all(sum(r.size for r in run) <= 300 for run in plan.runs)
    for partition in range(3):
        spans = [r for run in plan.runs for r in run if r.partition == partition]
        assert spans[0].start == 0
        assert all(a.end == b.start for a, b in itertools.pairwise(spans))
        assert plan.next_offsets[partition] == spans[-1].end
    assert plan.planned_events == 1_200


def test_a_hot_partition_cannot_starve_the_others():
    states = {0: PartitionState(0, 1_000_000), 1: PartitionState(0, 50), 2: PartitionState(0, 50)}
    plan = plan_runs("t", {0: 0, 1: 0, 2: 0}, states, max_events_per_run=300, max_runs=1)
    sizes = {r.partition: r.size for r in plan.runs[0]}
    assert sizes == {0: 200, 1: 50, 2: 50}


def test_offsets_already_expired_are_skipped_and_reported():
    plan = plan_runs("t", {0: 5}, {0: PartitionState(20, 30)}, 100, 1)
    assert plan.skipped_to_low_watermark == {0: 15}
    assert plan.runs == [[OffsetRange("t", 0, 20, 30)]]


def test_nothing_new_plans_nothing_and_keeps_the_cursor():
    plan = plan_runs("t", {0: 30, 1: 7}, {0: PartitionState(0, 30), 1: PartitionState(0, 7)}, 10, 3)
    assert plan.runs == [] and plan.next_offsets == {0: 30, 1: 7}


def test_invalid_ranges_and_bounds_are_refused():
    with pytest.raises(ValueError):
        OffsetRange("t", 0, 10, 5)
    with pytest.raises(ValueError):
        plan_runs("t", {}, {}, 0, 1)


def test_one_writer_per_table_plans_as_before_with_runs_sharing_partitions():
    states = {p: PartitionState(0, 100) for p in range(4)}
    one = plan_disjoint_runs("t", dict.fromkeys(states, 0), states, 200, 2, writers=1, busy={0, 1, 2, 3})
    assert one == plan_runs("t", dict.fromkeys(states, 0), states, 200, 2)


def test_concurrent_writers_get_disjoint_slots_and_a_busy_slot_waits():
    states = {p: PartitionState(0, 100) for p in range(4)}
    both = plan_disjoint_runs("t", dict.fromkeys(states, 0), states, 1_000, 4, writers=2)
    assert [[r.partition for r in run] for run in both.runs] == [[0, 2], [1, 3]]

    busy = plan_disjoint_runs("t", dict.fromkeys(states, 0), states, 1_000, 4, writers=2, busy={2})
    assert [[r.partition for r in run] for run in busy.runs] == [[1, 3]]
    assert busy.next_offsets == {0: 0, 1: 100, 2: 0, 3: 100}  # the busy slot is planned later


def test_the_slots_take_turns_after_the_last_run_s_slot():
    states = {0: PartitionState(0, 10), 1: PartitionState(0, 500), 2: PartitionState(0, 500)}
    cursor = {0: 0, 1: 0, 2: 0}
    assert plan_disjoint_runs("t", cursor, states, 1_000, 1, writers=3).runs == [[OffsetRange("t", 0, 0, 10)]]
    after_0 = plan_disjoint_runs("t", cursor, states, 1_000, 1, writers=3, last={0})
    assert after_0.runs == [[OffsetRange("t", 1, 0, 500)]]
    after_2 = plan_disjoint_runs("t", cursor, states, 1_000, 2, writers=3, last={2})
    assert [[r.partition for r in run] for run in after_2.runs] == [[0], [1]]


@given(
    ends=st.lists(st.integers(0, 300), min_size=1, max_size=9),
    starts=st.lists(st.integers(0, 300), min_size=9, max_size=9),
    writers=st.integers(1, 5),
    busy=st.sets(st.integers(0, 8), max_size=4),
    last=st.sets(st.integers(0, 8), max_size=1),
    per_run=st.integers(1, 200),
    max_runs=st.integers(1, 6),
)
def test_disjoint_plans_never_overlap_never_skip_and_leave_no_free_slot_idle(
    ends, starts, writers, busy, last, per_run, max_runs
):
    states = {p: PartitionState(0, end) for p, end in enumerate(ends)}
    cursor = {p: min(starts[p], ends[p]) for p in states}

    plan = plan_disjoint_runs("t", cursor, states, per_run, max_runs, writers, busy, last)

    assert len(plan.runs) <= max_runs
    assert all(0 < sum(r.size for r in run) <= per_run for run in plan.runs)
    for p in states:  # each partition's ranges are contiguous from the cursor to the new cursor
        spans = [r for run in plan.runs for r in run if r.partition == p]
        assert [r.start for r in spans] == [cursor[p], *[r.end for r in spans]][: len(spans)]
        assert plan.next_offsets[p] == (spans[-1].end if spans else cursor[p])
    if writers > 1:
        slots = [{r.partition % writers for r in run} for run in plan.runs]
        assert all(len(s) == 1 for s in slots)
        assert len({s.pop() for s in slots}) == len(slots)  # one run per slot
        assert not {r.partition % writers for run in plan.runs for r in run} & {b % writers for b in busy}
    waiting = {p % writers if writers > 1 else 0 for p in states if states[p].high > cursor[p]}
    free = waiting - {b % writers for b in busy} if writers > 1 else waiting
    assert len(plan.runs) == min(max_runs, len(free)) or writers == 1  # every free slot with work gets a run
    if writers == 1 and waiting:
        assert plan.runs
