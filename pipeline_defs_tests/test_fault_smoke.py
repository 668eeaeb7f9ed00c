"""A small version of the benchmark fault scenario (bench/faults.py), on the test stack:
events with attachments flow through dagster-daemon while the broker restarts, a run process
is killed with SIGKILL, Azurite stops and the attachment host answers 503. Afterwards no event
is missing, no row is duplicated, and every attachment is stored or dead-lettered."""

import pytest

from bench.faults import scenario


@pytest.mark.timeout(1800)  # a daemon, its runs and the stack share a busy machine
def test_nothing_lost_or_duplicated_through_faults(test_stack):
    # 400 events at 4/s: events keep arriving past the kill (t = 60 s, after the broker's
    # restart), so sensor ticks (every 15 s) keep planning runs for it to find in their step.
    result = scenario(test_stack, events=400, rate=4, short=True)

    assert result["events_missing"] == 0, result
    assert result["duplicate_event_rows"] == 0 and result["duplicate_inventory_rows"] == 0, result
    assert result["attachments_unaccounted"] == 0, result
    assert result["effects"]["run_killed_in_step"], result["timeline"]
    assert result["runs_retried"] >= 1, result["timeline"]  # the killed run was retried
