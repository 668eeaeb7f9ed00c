"""The field types of ``fields.py`` as polars expressions, for the columnar fast path.

Each accepts a strict subset of what its pydantic twin accepts and yields the same value, so a
row the fast path keeps is the row the per-record path would have built; anything outside the
subset (surrounding whitespace, non-ASCII text, an unusual timestamp form) is left to the
per-record path, which decides and says why.
"""

from __future__ import annotations

import polars as pl

from pipeline_defs.lib.validation.timestamps import EARLIEST, LATEST

# ``NonEmptyStr``: printable ASCII without surrounding spaces is exactly what stripping leaves
# alone (Python strips more kinds of whitespace than any regex class, so none are admitted).
_PLAIN = r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$"
# RFC 3339 as pydantic reads it, narrowed: seconds always, 1-6 fraction digits, Z or +-HH:MM.
_INSTANT = r"^(\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d)(?:\.(\d{1,6}))?(Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)?$"


def plain_text(name: str, max_chars: int = 512) -> pl.Expr:
    """Where ``name`` is a ``NonEmptyStr`` the fast path may take as it is."""
    column = pl.col(name)
    return column.is_not_null() & column.str.contains(_PLAIN) & (column.str.len_bytes() <= max_chars)


def text_list(name: str, max_chars: int) -> pl.Expr:
    """Where ``name`` is absent/null or a list of 1..``max_chars``-character strings."""
    items = pl.col(name).list.eval(pl.element().is_not_null() & pl.element().str.len_chars().is_between(1, max_chars))
    return pl.col(name).is_null() | items.list.all()


def utc_instant(name: str) -> pl.Expr:
    """``UtcDatetime`` from text: the instant in UTC, or null where the fast path cannot vouch
    for it (other forms, impossible dates, outside years 1-9999 once in UTC)."""
    parts = pl.col(name).str.extract_groups(_INSTANT)
    local = parts.struct.field("1").str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S", strict=False)
    micros = parts.struct.field("2").str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0)
    zone = parts.struct.field("3").fill_null("+00:00").str.replace("Z", "+00:00", literal=True)
    sign = pl.when(zone.str.starts_with("-")).then(-1).otherwise(1)
    hours, minutes = zone.str.slice(1, 2).cast(pl.Int64, strict=False), zone.str.slice(4, 2).cast(pl.Int64, strict=False)
    offset_min = sign * (hours * 60 + minutes)
    instant = (local + pl.duration(microseconds=micros) - pl.duration(minutes=offset_min)).dt.replace_time_zone("UTC")
    earliest, latest = pl.lit(EARLIEST).cast(pl.Datetime("us", "UTC")), pl.lit(LATEST).cast(pl.Datetime("us", "UTC"))
    return pl.when(instant.is_between(earliest, latest)).then(instant)
