"""Validation helpers shared by every message schema."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, StringConstraints, ValidationError

from pipeline_defs.lib.dlq import RejectedRecord

NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]


def _integer_as_text(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _plain_id(value: str) -> str:
    if not _ID.fullmatch(value) or set(value) == {"."}:
        raise ValueError("ids may hold letters, digits and . _ : - only")
    return value


_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Sources send ids as numbers or strings; the tables keep them as text. Ids end up in API
# paths, blob paths and DLQ entry ids, so they are kept to a plain alphabet.
Identifier = Annotated[NonEmptyStr, BeforeValidator(_integer_as_text), AfterValidator(_plain_id)]


def _aware(value: datetime) -> datetime:
    """Naive timestamps are taken as UTC (the Eventhouse exports ``utcDateTime``); aware ones
    keep their offset (Arrow stores the instant in UTC either way)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_aware)]


Model = TypeVar("Model", bound=BaseModel)


def parsed(model: type[Model], raw: bytes) -> Model:
    """``raw`` as ``model``, or a ``RejectedRecord`` saying why not."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise rejection_from(exc) from None


def rejection_from(error: ValidationError) -> RejectedRecord:
    """A DLQ reason naming fields and problems but never echoing input values, which may
    carry presigned URLs or personal data."""
    problems = error.errors(include_url=False, include_input=False, include_context=False)
    if any(p["type"] == "json_invalid" for p in problems):
        return RejectedRecord("malformed", "not valid JSON: " + problems[0]["msg"])
    reason = "; ".join(
        f"{'.'.join(str(part) for part in p['loc']) or '<root>'}: {p['msg']}" for p in problems
    )
    return RejectedRecord("invalid", reason)
