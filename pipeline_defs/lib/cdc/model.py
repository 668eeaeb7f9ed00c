"""What a change event is once read: the declared tables, the columns a mutation set, the row's
key and the writetime that orders it. Parsing (``envelope``), type transforms (``types``) and the
PostgreSQL sink (``sink``) all speak these."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    cql_type: str  # as CQL writes it: "int", "list<text>", "frozen<map<text, int>>", "tuple<int, text>", a UDT's name


@dataclass(frozen=True)
class TableSpec:
    """A replicated Cassandra table, declared in the settings."""

    keyspace: str
    table: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]  # partition key columns, then clustering columns
    udts: tuple[str, ...] = ()  # names of the user-defined types its columns use (stored as jsonb)

    @property
    def topic(self) -> str:
        return f"cassandra.{self.keyspace}.{self.table}"

    @property
    def pg_table(self) -> str:
        return f"{self.keyspace}__{self.table}"

    def column(self, name: str) -> Optional[ColumnSpec]:
        return next((c for c in self.columns if c.name == name), None)


class Op(str, Enum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"


@dataclass(frozen=True)
class Cell:
    """One cell a mutation set: its PostgreSQL-ready value, or its deletion."""

    value: Any  # after the type transform; None for a null or a deleted cell
    deleted: bool = False  # a cell tombstone (deletion_ts at or before the writetime)
    expires_at_us: Optional[int] = None  # a TTL: the cell expires then (deletion_ts in the future)


@dataclass(frozen=True)
class NewColumn:
    """A column the envelope carries and the declared schema lacks (schema evolution)."""

    name: str
    pg_type: str  # inferred from the envelope's schema, else from the value ("jsonb" when unsure)
    value: Any


@dataclass(frozen=True)
class ChangeEvent:
    op: Op
    table: TableSpec
    key: dict[str, Any]  # every primary key column -> its PostgreSQL-ready value
    cells: dict[str, Cell]  # only the cells this mutation set (``set: true``); empty for a row delete
    writetime_us: int  # source.ts_ms: microseconds, the mutation's writetime
    position: str = ""  # source commit log file:position, for the audit
    new_columns: tuple[NewColumn, ...] = field(default_factory=tuple)
    range_delete: Optional[dict[str, Any]] = None  # a range/partition tombstone: the key prefix it covers
