"""The CDC sink's test table (every CQL type), its events and a handle on a schema of its own in
the test stack's PostgreSQL: shared by the sink's and the expiry's tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from ipaddress import ip_address
from typing import Any, Optional

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pipeline_defs.lib.cdc.ddl import ensure_table
from pipeline_defs.lib.cdc.model import Cell, ChangeEvent, ColumnSpec, Op, TableSpec
from pipeline_defs.lib.cdc.sink import ApplyResult, apply

SPEC = TableSpec(
    keyspace="claims",
    table="policy",
    columns=(
        ColumnSpec("id", "uuid"),
        ColumnSpec("seq", "int"),
        ColumnSpec("name", "text"),
        ColumnSpec("big", "bigint"),
        ColumnSpec("small", "smallint"),
        ColumnSpec("amount", "decimal"),
        ColumnSpec("ratio", "double"),
        ColumnSpec("flag", "boolean"),
        ColumnSpec("at", "timestamp"),
        ColumnSpec("day", "date"),
        ColumnSpec("tod", "time"),
        ColumnSpec("dur", "duration"),
        ColumnSpec("blob", "blob"),
        ColumnSpec("tags", "list<text>"),
        ColumnSpec("nums", "set<int>"),
        ColumnSpec("attrs", "map<text, int>"),
        ColumnSpec("addr", "frozen<address>"),
        ColumnSpec("ip", "inet"),
        ColumnSpec("vi", "varint"),
        ColumnSpec("f", "float"),
    ),
    primary_key=("id", "seq"),
    udts=("address",),
)
TOPIC = SPEC.topic
GROUP = "cdc-test"
FULL = {
    "name": "Zoë", "big": 2**62, "small": -7, "amount": Decimal("12345.6789"), "ratio": float("nan"), "flag": True,
    "at": datetime(2024, 2, 29, 12, 30, 1, 123456, tzinfo=UTC), "day": date(1970, 1, 1), "tod": dtime(23, 59, 59, 999999),
    "dur": timedelta(days=3, seconds=5, microseconds=7), "blob": b"\x00\xffbin", "tags": ["a", "b", ""], "nums": [1, 2, 3],
    "attrs": {"x": 1}, "addr": Jsonb({"street": "Main", "zip": None}), "ip": ip_address("2001:db8::1"),
    "vi": Decimal("123456789012345678901234567890"), "f": 1.5,
}  # fmt: skip


def event(op: Op, key: dict[str, Any], wt: int, cells: Optional[dict[str, Any]] = None, **extra: Any) -> ChangeEvent:
    return ChangeEvent(
        op, SPEC, key, {n: Cell(v) for n, v in (cells or {}).items()}, wt, position=f"CommitLog-7-1.log:{wt}", **extra
    )


def at(events: Sequence[ChangeEvent], partition: int = 0, start: int = 0) -> list[tuple[ChangeEvent, tuple[str, int, int]]]:
    return [(e, (TOPIC, partition, start + n)) for n, e in enumerate(events)]


def key(n: int, seq: int = 0) -> dict[str, Any]:
    return {"id": uuid.UUID(int=n), "seq": seq}


@dataclass
class Db:
    conninfo: str
    schema: str
    conn: psycopg.Connection
    soft: bool = False

    def apply(self, batch: list, conn: Optional[psycopg.Connection] = None, **kw: Any) -> ApplyResult:
        offsets: dict[tuple[str, int], int] = {}
        for _, (topic, partition, offset) in batch:
            offsets[(topic, partition)] = max(offsets.get((topic, partition), 0), offset + 1)
        kw.setdefault("stale_threshold_us", None)
        return apply(conn or self.conn, SPEC, batch, offsets, GROUP, soft_delete=self.soft, schema=self.schema, **kw)

    def rows(self, *columns: str) -> list[tuple]:
        cols = sql.SQL(", ").join(map(sql.Identifier, columns or ("id", "seq", "name", "_cdc_writetime")))
        query = sql.SQL("SELECT {} FROM {}.{} ORDER BY id, seq").format(
            cols, sql.Identifier(self.schema), sql.Identifier(SPEC.pg_table)
        )
        return self.conn.execute(query).fetchall()

    def one(self, query: str, *params: Any) -> Any:
        return self.conn.execute(sql.SQL(query).format(s=sql.Identifier(self.schema)), params).fetchall()

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True)


def make_db(conninfo: str, soft: bool = False) -> Iterator[Db]:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ensure_table(conn, SPEC, schema=schema, soft_delete=soft)
        yield Db(conninfo, schema, conn, soft)
