"""Rows to PostgreSQL's binary COPY format, one row at a time, so one bad value rejects its row
and not the whole COPY.

psycopg's ``Copy.write_row`` fails the COPY on the first value its dumper cannot take, and its
binary integer dumpers silently wrap a Python int too big for the column. Here each row is
dumped with the same dumpers (by the columns' type oids), after checks for what a dumper would
mangle or PostgreSQL would refuse, and framed by hand; a refused row raises ``UnstorableValue``
or the dumper's own error, and the caller decides whose record that is.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
_NULL = struct.pack("!i", -1)
_LENGTH = struct.Struct("!i").pack
# int2, int4, int8 and their arrays: the bound of their absolute value
_INT_LIMITS = {21: 1 << 15, 23: 1 << 31, 20: 1 << 63, 1005: 1 << 15, 1007: 1 << 31, 1016: 1 << 63}
_TEXT_OIDS = {25, 1043, 1042, 19, 1009, 1015, 1014}  # text, varchar, bpchar, name and arrays
_JSON_OIDS = {114, 3802, 199, 3807}  # json, jsonb and arrays


class UnstorableValue(ValueError):
    """A value the column cannot hold; the message names the problem, never the value."""


class BinaryRows:
    """Frames rows for ``COPY ... FROM STDIN (FORMAT BINARY)`` into columns of ``oids``."""

    def __init__(self, conn: psycopg.Connection, oids: Sequence[int]):
        self.tx = Transformer(conn)
        self.tx.set_dumper_types(list(oids), pq.Format.BINARY)
        self.formats = [PyFormat.BINARY] * len(oids)
        self.count = struct.pack("!h", len(oids))
        self.ints = [(i, _INT_LIMITS[o]) for i, o in enumerate(oids) if o in _INT_LIMITS]
        self.texts = [i for i, o in enumerate(oids) if o in _TEXT_OIDS]
        self.jsons = [i for i, o in enumerate(oids) if o in _JSON_OIDS]

    def frame(self, row: Sequence[Any]) -> bytes:
        """One row's bytes; raises if a value does not fit its column."""
        for i, limit in self.ints:
            if row[i] is not None and any(isinstance(v, int) and not -limit <= v < limit for v in _leaves(row[i])):
                raise UnstorableValue("integer out of range")
        for i in self.texts:
            if row[i] is not None and any(isinstance(v, str) and "\x00" in v for v in _leaves(row[i])):
                raise UnstorableValue("NUL character in text")
        dumped = self.tx.dump_sequence(row, self.formats)
        for i in self.jsons:
            value = dumped[i]
            if value is not None and b"\\u0000" in bytes(value):
                raise UnstorableValue("NUL character in json")
        parts = [self.count]
        for value in dumped:
            if value is None:
                parts.append(_NULL)
            else:
                parts += (_LENGTH(len(value)), bytes(value))
        return b"".join(parts)


def copy_stream(framed_rows: Iterable[bytes]) -> bytes:
    """The whole COPY payload, for ``Copy.write``."""
    return b"".join([HEADER, *framed_rows, TRAILER])


def unstorable_reason(error: Exception) -> str:
    """Why a row was refused, without the value (a dumper's own message may quote it)."""
    if isinstance(error, UnstorableValue):
        return str(error)
    return f"{type(error).__name__}: wrong Python type for the column"


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value
