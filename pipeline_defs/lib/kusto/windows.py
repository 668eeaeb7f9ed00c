"""Poll windows: half-open intervals ``[start, end)`` of Kusto's ``ingestion_time()``.

Windows are aligned to multiples of their length from midnight UTC, so the windows a sensor
plans and the windows a backfill of a day re-polls are the same ones, and a day's windows
belong to that day's partition. A window is never planned past ``now - lag``: rows become
queryable some time after the ingestion time they carry, and the lag is that allowance. Each
window is queried from ``start - overlap`` to catch rows that became visible after the
previous window was read; what the overlap reads twice is dropped by the dedup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

DAY_S = 86_400
WINDOW_TAG = "eventhouse/window"  # "<start>/<end>" in ISO 8601, UTC


@dataclass(frozen=True, order=True)
class PollWindow:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None or not self.start < self.end:
            raise ValueError("a poll window is a non-empty interval of aware instants")

    @property
    def tag(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"

    @classmethod
    def from_tag(cls, tag: str) -> PollWindow:
        start, _, end = tag.partition("/")
        return cls(datetime.fromisoformat(start).astimezone(UTC), datetime.fromisoformat(end).astimezone(UTC))

    @property
    def day(self) -> date:
        return self.start.date()

    def split(self, window_s: int) -> list[PollWindow]:
        """The aligned windows of ``window_s`` covering this one (its ends included as they are)."""
        step = timedelta(seconds=window_s)
        pieces, start = [], self.start
        while start < self.end:
            end = min(align(start, window_s) + step, self.end)
            pieces.append(PollWindow(start, end))
            start = end
        return pieces


def check_window_length(window_s: int) -> int:
    if window_s <= 0 or DAY_S % window_s:
        raise ValueError(f"poll window of {window_s} s: it must divide a day (86,400 s) so days hold whole windows")
    return window_s


def align(instant: datetime, window_s: int) -> datetime:
    """The start of the aligned window holding ``instant``."""
    midnight = datetime.combine(instant.date(), time(), tzinfo=UTC)
    seconds = (instant - midnight).total_seconds()
    return midnight + timedelta(seconds=int(seconds // window_s) * window_s)


def due_windows(planned_until: datetime, now: datetime, window_s: int, lag_s: float, limit: int) -> list[PollWindow]:
    """The next windows from ``planned_until`` that end by ``now - lag``, at most ``limit``; each
    ends on an aligned boundary (the first one may start off it, after a change of length)."""
    check_window_length(window_s)
    horizon = now - timedelta(seconds=lag_s)
    windows: list[PollWindow] = []
    start = planned_until
    while len(windows) < limit:
        end = align(start, window_s) + timedelta(seconds=window_s)
        if end > horizon:
            break
        windows.append(PollWindow(start, end))
        start = end
    return windows


def day_window(day: date) -> PollWindow:
    """The whole of a day partition: what a backfill of that day re-polls."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return PollWindow(start, start + timedelta(days=1))
