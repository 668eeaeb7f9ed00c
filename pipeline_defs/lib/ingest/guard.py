"""The per-record guard: whatever one record does to the code that handles it, only that
record fails.

Everything a sink does for one record (decode, validate, build its row and follow-up tasks,
check its URL, download, parse an answer's headers, enrich, build its dead letter) runs under
``guarded``. A ``RejectedRecord`` keeps its own category; any other exception becomes an
``unprocessable`` rejection naming the stage, the exception class and the function that raised
it, never a value (values can be presigned URLs or personal data). Only an
``InfrastructureError`` (broker, storage, a refused credential) or a Delta commit conflict
escapes, so only infrastructure fails a step.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from deltalake.exceptions import CommitFailedError

UNPROCESSABLE = "unprocessable"


class InfrastructureError(Exception):
    """No record is to blame (the broker, the storage, a refused credential): the step fails
    and its retry policy runs it again; nothing is dead-lettered."""


class RejectedRecord(Exception):
    """A record that can never be processed as it is; it goes to a DLQ, the run goes on."""

    def __init__(self, category: str, reason: str):
        super().__init__(f"{category}: {reason}")
        self.category = category
        self.reason = reason


def is_infrastructure(error: BaseException) -> bool:
    return isinstance(error, (InfrastructureError, CommitFailedError))


def unprocessable(error: BaseException, stage: str) -> RejectedRecord:
    """Why a record broke the code: the stage, the exception class and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" in {frames[-1].name}" if frames else ""
    return RejectedRecord(UNPROCESSABLE, f"{stage}: {type(error).__name__}{where}")


T = TypeVar("T")


def guarded(stage: str, work: Callable[..., T], *args: Any) -> T | RejectedRecord:
    """``work(*args)``, or the rejection it amounts to; infrastructure failures propagate."""
    try:
        return work(*args)
    except Exception as error:  # noqa: BLE001 - the point: no record can stop the batch
        return _rejection(error, stage)


async def guarded_async(stage: str, work: Callable[..., Awaitable[T]], *args: Any) -> T | RejectedRecord:
    """``guarded`` for coroutines (downloads, API calls)."""
    try:
        return await work(*args)
    except Exception as error:  # noqa: BLE001
        return _rejection(error, stage)


def _rejection(error: Exception, stage: str) -> RejectedRecord:
    if isinstance(error, RejectedRecord):
        return error
    if is_infrastructure(error):
        raise error
    return unprocessable(error, stage)
