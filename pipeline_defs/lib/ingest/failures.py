"""How a unit of work (a download, an API enrichment) failed, and whether trying again helps.

One vocabulary for every task type, so retry topics, DLQs and their views treat them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Optional

from pipeline_defs.lib.ingest.guard import RejectedRecord
from pipeline_defs.lib.validation.timestamps import ascii_int, parse_http_date

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 7 * 24 * 3600  # a longer ask is taken as this: the last retry topic waits anyway


class FailureCategory(str, Enum):
    TRANSIENT = "transient"  # try again later: timeouts, connection errors, 5xx, 429
    PERMANENT = "permanent"  # never works as is: 404/410, blocked URL, wrong type, expired
    AUTH = "auth"  # the remote side refused our access (401/403)
    CIRCUIT_OPEN = "circuit_open"  # not attempted: the remote side's breaker is open
    UNPROCESSABLE = "unprocessable"  # the task broke the code that handles it

    @property
    def retryable(self) -> bool:
        return self in (FailureCategory.TRANSIENT, FailureCategory.CIRCUIT_OPEN)


@dataclass(frozen=True)
class TaskFailure:
    category: FailureCategory
    code: str  # e.g. http_404, blocked_url, wrong_file_type, expired_link, timeout, not_found
    detail: str  # names what failed, never secrets or presigned query strings
    retry_after_s: Optional[float] = None


def failure_of(rejection: RejectedRecord) -> TaskFailure:
    """A task the guard rejected, as a failure the retry routing understands."""
    return TaskFailure(FailureCategory.UNPROCESSABLE, rejection.category, rejection.reason)


def http_failure(status: int, retry_after: Optional[str] = None) -> TaskFailure:
    """The category of a non-success HTTP status."""
    code = f"http_{status}"
    if status in (404, 410):
        return TaskFailure(FailureCategory.PERMANENT, code, f"HTTP {status}")
    if status in (401, 403):
        return TaskFailure(FailureCategory.AUTH, code, f"HTTP {status}")
    if status in TRANSIENT_STATUSES or status >= 500:
        return TaskFailure(FailureCategory.TRANSIENT, code, f"HTTP {status}", retry_after_seconds(retry_after))
    return TaskFailure(FailureCategory.PERMANENT, code, f"HTTP {status}")


def retry_after_seconds(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds or HTTP date, a missing zone taken as
    UTC), at most a week; ``None`` when the header is absent or unusable."""
    if not value:
        return None
    seconds = ascii_int(value)
    if seconds is None:
        when = parse_http_date(value)
        if when is None:
            return None
        seconds = int((when - (now or datetime.now(UTC))).total_seconds())
    return float(min(max(seconds, 0), MAX_RETRY_AFTER_S))


# The counter a run's metadata keeps for each category.
FAILURE_COUNTERS = {
    FailureCategory.TRANSIENT: "failed_transient",
    FailureCategory.PERMANENT: "failed_permanent",
    FailureCategory.AUTH: "failed_auth",
    FailureCategory.CIRCUIT_OPEN: "circuit_open",
    FailureCategory.UNPROCESSABLE: "failed_unprocessable",
}
