"""Poll windows: aligned, contiguous, never past now - lag, and a day's windows are a day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_defs.lib.kusto.windows import DAY_S, PollWindow, align, day_window, due_windows

LENGTHS = st.sampled_from([1, 5, 10, 30, 60, 300, 900, 3600, DAY_S])
INSTANTS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))


@given(INSTANTS, INSTANTS, LENGTHS, st.floats(0, 7200), st.integers(0, 50))
def test_due_windows_are_contiguous_aligned_and_never_past_the_lag(
    planned_until: datetime, now: datetime, window_s: int, lag_s: float, limit: int
) -> None:
    windows = due_windows(planned_until, now, window_s, lag_s, limit)
    assert len(windows) <= limit
    horizon = now - timedelta(seconds=lag_s)
    start = planned_until
    for window in windows:
        assert window.start == start and window.end <= horizon
        assert align(window.end, window_s) == window.end  # every window ends on a boundary
        start = window.end
    if len(windows) < limit:  # it stopped because the next window would pass the horizon
        assert align(start, window_s) + timedelta(seconds=window_s) > horizon


@given(INSTANTS, LENGTHS)
def test_a_window_tag_round_trips(start: datetime, window_s: int) -> None:
    window = PollWindow(start, start + timedelta(seconds=window_s))
    assert PollWindow.from_tag(window.tag) == window


@given(st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 1, 1)), LENGTHS)
def test_a_day_splits_into_its_aligned_windows(day: date, window_s: int) -> None:
    pieces = day_window(day).split(window_s)
    assert len(pieces) == DAY_S // window_s
    assert all(p.day == day and (p.end - p.start).total_seconds() == window_s for p in pieces)


def test_a_window_length_must_divide_a_day() -> None:
    with pytest.raises(ValueError, match="divide a day"):
        due_windows(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), 7, 0, 1)


def test_a_window_is_a_non_empty_interval_of_aware_instants() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        PollWindow(moment, moment)
    with pytest.raises(ValueError):
        PollWindow(datetime(2026, 1, 1), datetime(2026, 1, 2))
