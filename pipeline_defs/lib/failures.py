"""How a unit of work (a download, an API enrichment) failed, and whether trying again helps.

One vocabulary for every task type, so retry topics, DLQs and their views treat them alike.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Optional

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class FailureCategory(str, Enum):
    TRANSIENT = "transient"  # try again later: timeouts, connection errors, 5xx, 429
    PERMANENT = "permanent"  # never works as is: 404/410, blocked URL, wrong type, expired
    AUTH = "auth"  # the remote side refused our access (401/403)
    CIRCUIT_OPEN = "circuit_open"  # not attempted: the remote side's breaker is open

    @property
    def retryable(self) -> bool:
        return self in (FailureCategory.TRANSIENT, FailureCategory.CIRCUIT_OPEN)


@dataclass(frozen=True)
class TaskFailure:
    category: FailureCategory
    code: str  # e.g. http_404, blocked_url, wrong_file_type, expired_link, timeout, not_found
    detail: str  # names what failed, never secrets or presigned query strings
    retry_after_s: Optional[float] = None


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


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


# The counter a run's metadata keeps for each category.
FAILURE_COUNTERS = {
    FailureCategory.TRANSIENT: "failed_transient",
    FailureCategory.PERMANENT: "failed_permanent",
    FailureCategory.AUTH: "failed_auth",
    FailureCategory.CIRCUIT_OPEN: "circuit_open",
}
