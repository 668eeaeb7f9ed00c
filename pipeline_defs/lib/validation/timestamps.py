"""Instants from untrusted text and numbers: always time-zone aware (UTC), always inside what
Python, Arrow and Delta can hold, never an exception other than ``ValueError``.

A naive value is taken as UTC (the Eventhouse exports ``utcDateTime``); an aware one is moved to
UTC, so ``9999-12-31T23:59:59-01:00`` (year 10000 in UTC) is refused here instead of breaking a
conversion further down.
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime, timedelta
from typing import Optional

EARLIEST = datetime(1, 1, 2, tzinfo=UTC)  # a day inside year 1: any offset still fits
LATEST = datetime(9999, 12, 30, tzinfo=UTC)

_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() also accepts "²"


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; ``ValueError`` if that instant is outside years 1-9999."""
    try:
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("instant outside years 1-9999 in UTC") from None
    if not EARLIEST <= moment <= LATEST:
        raise ValueError("instant outside years 1-9999 in UTC")
    return moment


def from_epoch_ms(millis: Optional[int]) -> Optional[datetime]:
    """A Kafka timestamp (ms since the epoch) as an instant; ``None`` if absent or absurd."""
    if millis is None or millis <= 0:
        return None
    return from_epoch_s(millis / 1000)


def from_epoch_s(seconds: float) -> Optional[datetime]:
    try:
        return as_utc(datetime.fromtimestamp(seconds, UTC))
    except (OverflowError, OSError, ValueError):
        return None


def ascii_int(text: str) -> Optional[int]:
    """A non-negative integer written in at most 18 ASCII digits, else ``None``."""
    stripped = text.strip()
    return int(stripped) if _DIGITS.fullmatch(stripped) else None


def parse_iso(text: str) -> Optional[datetime]:
    """ISO 8601 date or date-time (``Z`` allowed); naive means UTC. ``None`` if unusable."""
    try:
        return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00")))
    except (ValueError, TypeError):
        return None


def parse_http_date(text: str) -> Optional[datetime]:
    """An RFC 9110 HTTP date; a missing or ``-0000`` zone means UTC. ``None`` if unusable."""
    try:
        return as_utc(email.utils.parsedate_to_datetime(text))
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def clamp_after(start: datetime, seconds: int) -> datetime:
    """``start + seconds``, saturating at ``LATEST`` instead of overflowing."""
    try:
        return min(start + timedelta(seconds=seconds), LATEST)
    except OverflowError:
        return LATEST
