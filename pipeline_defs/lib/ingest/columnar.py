"""Columnar decoding of a batch of JSON messages: one Arrow JSON parse for the whole batch and
polars expressions for the checks, so ordinary records never reach per-record Python.

It is a fast path and nothing more. A record it cannot vouch for (anything unusual: not one
JSON object on one line, NaN or Infinity tokens, deep nesting, bytes outside UTF-8, a field of
another type, a value the checks do not accept) is handed back and takes the per-record path,
which decides, and gives the reason, exactly as before. The fast path accepts only what the
per-record path accepts, building the same row; a property test holds the two to that.

Arrow's reader is stricter than RFC 8259 in places (it rejects duplicate keys) and laxer in
others (it accepts NaN, Infinity, arbitrarily deep nesting and invalid UTF-8 outside the fields
it reads), so those are screened out before parsing.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json

# pydantic's JSON parser refuses nesting deeper than ~200; fewer brackets than this cannot nest that deep.
MAX_BRACKETS = 128
RAW_COLUMN = "_raw"  # the message's own text, beside the wire fields, for ``build``
_ROW_OF_ERROR = re.compile(r"in row (\d+)\s*$")


@dataclass(frozen=True)
class Decoded:
    rows: pa.Table  # one row per record in ``fast``, in that order
    fast: list[int]  # indices of the records decoded here
    slow: list[int]  # indices of the records the per-record path must decide


@dataclass(frozen=True)
class ColumnarDecoder:
    """``wire``: the fields read, with their JSON types (missing or null fields read as null).
    ``build``: the output columns, from the wire fields and ``RAW_COLUMN``; ``accepted``: the
    rows the fast path vouches for, given the wire fields and what ``build`` made of them;
    ``follow_ups_needed``: the built rows that may have follow-up records (the others have
    none, so no per-row work is done for them)."""

    wire: pa.Schema
    build: Callable[[pl.DataFrame], pl.DataFrame]
    accepted: Callable[[pl.DataFrame, pl.DataFrame], pl.Series]
    columns: pa.Schema  # what ``build`` returns, as the table stores it
    follow_ups_needed: pl.Expr = field(default_factory=lambda: pl.lit(True))

    def decode(self, values: Sequence[bytes]) -> Decoded:
        parsed, fast, slow = parse_json_lines(values, self.wire)
        frame = pl.from_arrow(parsed)
        assert isinstance(frame, pl.DataFrame)
        if not fast:
            return Decoded(self.columns.empty_table(), [], slow)
        frame = frame.with_columns(pl.Series(RAW_COLUMN, [values[i] for i in fast], dtype=pl.Binary).cast(pl.String))
        built = self.build(frame)
        keep = self.accepted(frame, built).fill_null(False)
        flags = keep.to_list()
        kept = [index for index, ok in zip(fast, flags) if ok]
        slow = sorted(slow + [index for index, ok in zip(fast, flags) if not ok])
        if not kept:
            return Decoded(self.columns.empty_table(), [], slow)
        return Decoded(built.filter(keep).to_arrow().cast(self.columns), kept, slow)


def parse_json_lines(values: Sequence[bytes], wire: pa.Schema) -> tuple[pa.Table, list[int], list[int]]:
    """The records that Arrow's JSON reader parses one for one under ``wire``, and the indices
    of those it does not (or must not be trusted with). A failed parse is split where the
    reader says it broke, or in halves when it does not say, until each bad record is alone."""
    candidates, slow = _screened(values)
    lines = [values[i] for i in candidates]
    parsed: list[tuple[int, pa.Table]] = []
    pending = [(0, len(lines))] if lines else []
    while pending:
        start, end = pending.pop()
        table, failed_at = _parse(lines[start:end], wire)
        if table is not None:
            parsed.append((start, table))
        elif end - start == 1:
            slow.append(candidates[start])
        elif failed_at is not None and failed_at >= 0:
            slow.append(candidates[start + failed_at])
            pending += [(s, e) for s, e in ((start, start + failed_at), (start + failed_at + 1, end)) if e > s]
        else:
            middle = (start + end) // 2
            pending += [(start, middle), (middle, end)]
    parsed.sort(key=lambda piece: piece[0])
    fast = [candidates[i] for start, table in parsed for i in range(start, start + table.num_rows)]
    rows = pa.concat_tables([table for _, table in parsed]) if parsed else wire.empty_table()
    return rows, fast, sorted(slow)


def _parse(lines: Sequence[bytes], wire: pa.Schema) -> tuple[pa.Table | None, int | None]:
    """``(table, None)``; or ``(None, row)`` when record ``row`` broke the parse (-1: unknown)."""
    data = b"\n".join(lines)
    try:
        table = pa_json.read_json(
            io.BytesIO(data),
            read_options=pa_json.ReadOptions(block_size=max(len(data) + 1, 1 << 16), use_threads=False),
            parse_options=pa_json.ParseOptions(explicit_schema=wire, unexpected_field_behavior="ignore"),
        )
    except pa.ArrowException as exc:
        found = _ROW_OF_ERROR.search(str(exc))
        row = int(found.group(1)) if found else -1
        return None, row if 0 <= row < len(lines) else -1
    if table.num_rows != len(lines):  # a line held more than one object: trust none of them
        return None, -1
    return table.select(wire.names), None


def _screened(values: Sequence[bytes]) -> tuple[list[int], list[int]]:
    """Records the reader can be trusted with: one object on one line, no NaN/Infinity tokens,
    shallow, UTF-8. Whole-batch scans first; per-record ones only where those find something."""
    joined = b"\x00".join(values)
    suspects_everywhere = b"\n" in joined or b"\r" in joined or b"NaN" in joined or b"Infinity" in joined or not joined.isascii()
    candidates: list[int] = []
    slow: list[int] = []
    for index, value in enumerate(values):
        ok = value[:1] == b"{" and value[-1:] == b"}" and value.count(b"{") + value.count(b"[") < MAX_BRACKETS
        if ok and suspects_everywhere:
            ok = not any(token in value for token in (b"\n", b"\r", b"NaN", b"Infinity")) and _utf8(value)
        (candidates if ok else slow).append(index)
    return candidates, slow


def _utf8(value: bytes) -> bool:
    if value.isascii():
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
