"""Validation helpers shared by every message schema: bounded, time-zone aware, valid JSON."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

import pydantic_core
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StringConstraints, ValidationError

from pipeline_defs.lib.attachments.url_safety import MAX_URL_LENGTH
from pipeline_defs.lib.ingest.guard import RejectedRecord
from pipeline_defs.lib.validation.timestamps import as_utc

NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]

# A URL as events carry it: presigned links run to thousands of characters. Whether it may be
# fetched (at most MAX_URL_LENGTH) is the downloader's decision: a blocked URL is that
# attachment's failure, not the event's.
UrlStr = Annotated[str, StringConstraints(min_length=1, max_length=8 * MAX_URL_LENGTH)]

# Integers that fit the Delta (Arrow int64) columns they land in.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


def _integer_as_text(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**128 else value


def _plain_id(value: str) -> str:
    if not _ID.fullmatch(value) or set(value) == {"."}:
        raise ValueError("ids may hold letters, digits and . _ : - only")
    return value


_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Sources send ids as numbers or strings; the tables keep them as text. Ids end up in API
# paths, blob paths and DLQ entry ids, so they are kept to a plain alphabet.
Identifier = Annotated[NonEmptyStr, BeforeValidator(_integer_as_text), AfterValidator(_plain_id)]

# Naive timestamps are taken as UTC (the Eventhouse exports ``utcDateTime``); aware ones are
# moved to UTC, and instants outside years 1-9999 are refused.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity; a number too large for a float (``1e400``) would become one."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("number out of range for JSON (NaN or Infinity)")
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_finite)]


Model = TypeVar("Model", bound=BaseModel)


def parsed(model: type[Model], raw: bytes) -> Model:
    """``raw`` as ``model``, or a ``RejectedRecord`` saying why not. ``raw`` must be JSON as
    RFC 8259 defines it (UTF-8, no NaN/Infinity), so what a table keeps of it stays valid JSON."""
    try:
        document = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise RejectedRecord("malformed", f"not valid JSON: {exc}") from None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise rejection_from(exc) from None


def rejection_from(error: ValidationError) -> RejectedRecord:
    """A DLQ reason naming fields and problems but never echoing input values, which may
    carry presigned URLs or personal data."""
    problems = error.errors(include_url=False, include_input=False, include_context=False)
    reason = "; ".join(f"{'.'.join(str(part) for part in p['loc']) or '<root>'}: {p['msg']}" for p in problems[:10])
    return RejectedRecord("invalid", reason)
