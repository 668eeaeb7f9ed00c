"""Debezium Cassandra change events as the connector puts them on Kafka, for the CDC pipeline's
demos and tests: inserts, partial updates, cell deletions, TTLs, row and partition deletes
(with the Kafka null that may follow), duplicates and out-of-order writetimes (replicas, the
connector's restarts), a few broken records, and a column that appears mid-stream.

Envelopes follow the connector (source ``ts_ms`` in ms plus ``ts_us``, ``pos``, ``op`` ``c``/``u``/``d``)
through Kafka Connect's JSON converter, with or without schemas. Counter tables are left out:
the connector skips their mutations.
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, Optional

from pipeline_defs.lib.cdc.model import ColumnSpec, TableSpec
from pipeline_defs.lib.cdc.types import MAX_VALUE_BYTES, CqlType, parse_cql_type

UDT_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "address": (("street", "text"), ("city", "text"), ("postcode", "ascii"), ("country", "text")),
}


def _table(keyspace: str, table: str, pk: tuple[str, ...], columns: str, udts: tuple[str, ...] = ()) -> TableSpec:
    specs = tuple(ColumnSpec(*(part.strip() for part in c.split(":", 1))) for c in columns.split(";"))
    return TableSpec(keyspace, table, specs, pk, udts)


DEMO_TABLES: tuple[TableSpec, ...] = (
    _table(
        "claims",
        "policies",
        ("policy_id",),
        "policy_id: uuid; holder_name: text; holder_code: ascii; legacy_ref: varchar; premium: decimal; "
        "sum_insured: varint; coverage_limit: bigint; claim_count: int; region_code: smallint; risk_tier: tinyint; "
        "risk_score: float; loss_ratio: double; active: boolean; issued_on: date; renews_at: timestamp; "
        "cutoff_time: time; grace_period: duration; agent_ip: inet; signature: blob; revision: timeuuid; "
        "tags: set<text>; riders: list<text>; limits: map<text, decimal>; insured_address: frozen<address>; "
        "location: tuple<double, double>; endorsements: list<frozen<map<text, int>>>",
        udts=("address",),
    ),
    _table(
        "claims",
        "claim_notes",
        ("claim_id", "noted_at", "note_id"),
        "claim_id: uuid; noted_at: timestamp; note_id: timeuuid; author: text; body: text; attachments: list<blob>; "
        "reviewer_ips: set<inet>; amounts: map<int, text>; pinned: boolean; seen_on: set<date>",
    ),
)
EVOLVED_COLUMN = ("fraud_flag", "boolean")  # appears in claims.policies after ``evolve_after`` events


class Envelope(NamedTuple):
    topic: str
    key: bytes
    value: Optional[bytes]  # None: the Kafka tombstone after a delete
    kind: str  # insert, update, cell_delete, ttl, delete, partition_delete, tombstone, duplicate, out_of_order, dirty:*


def connect_schema(t: CqlType, decimal_mode: str = "double", varint_mode: str = "long") -> dict[str, Any]:
    """The Kafka Connect schema (JSON converter form) the connector gives a CQL type."""
    logical = {
        "uuid": ("string", "io.debezium.data.Uuid"),
        "timeuuid": ("string", "io.debezium.data.Uuid"),
        "timestamp": ("int64", "io.debezium.time.Timestamp"),
        "date": ("int32", "io.debezium.time.Date"),
        "duration": ("int64", "io.debezium.time.NanoDuration"),
    }
    plain = {"tinyint": "int8", "smallint": "int16", "int": "int32", "bigint": "int64", "counter": "int64", "time": "int64"}
    plain |= {"float": "float32", "double": "float64", "boolean": "boolean", "blob": "bytes"}
    plain |= dict.fromkeys(("text", "varchar", "ascii", "inet"), "string")
    if t.name in logical:
        return {"type": logical[t.name][0], "optional": True, "name": logical[t.name][1], "version": 1}
    if t.name in plain:
        return {"type": plain[t.name], "optional": True}
    if t.name == "decimal":
        if decimal_mode == "precise":
            fields = [
                {"type": "int32", "optional": False, "field": "scale"},
                {"type": "bytes", "optional": False, "field": "value"},
            ]
            return {
                "type": "struct",
                "fields": fields,
                "optional": True,
                "name": "io.debezium.data.VariableScaleDecimal",
                "version": 1,
            }
        return {"type": "string" if decimal_mode == "string" else "float64", "optional": True}
    if t.name == "varint":
        if varint_mode == "precise":
            return {
                "type": "bytes",
                "optional": True,
                "name": "org.apache.kafka.connect.data.Decimal",
                "version": 1,
                "parameters": {"scale": "0"},
            }
        return {"type": "string" if varint_mode == "string" else "int64", "optional": True}
    sub = [connect_schema(a, decimal_mode, varint_mode) for a in t.args]
    if t.name in ("list", "set"):
        return {"type": "array", "items": sub[0], "optional": True}
    if t.name == "map":
        return {"type": "map", "keys": sub[0], "values": sub[1], "optional": True}
    if t.name == "tuple":
        fields = [{**s, "field": f"field{i + 1}"} for i, s in enumerate(sub)]
        return {"type": "struct", "fields": fields, "optional": True, "name": "Tuple"}
    udt = [{**connect_schema(parse_cql_type(c)), "field": f} for f, c in UDT_FIELDS.get(t.name, ())]
    return {"type": "struct", "fields": udt, "optional": True, "name": t.name}


def debezium_value(t: CqlType, rng: random.Random, decimal_mode: str = "double", varint_mode: str = "long") -> Any:
    """A random value of ``t`` in the form the connector writes it."""
    name = t.name
    if name in ("uuid", "timeuuid"):
        return str(
            uuid.uuid1(node=rng.getrandbits(48), clock_seq=rng.getrandbits(14))
            if name == "timeuuid"
            else uuid.UUID(int=rng.getrandbits(128), version=4)
        )
    if name in ("text", "varchar"):
        return rng.choice(["Anne Kretchmar", "Zoë Østergaard", "見積もり", "roof leak — kitchen", 'O\'Brien "Jr"'])
    if name == "ascii":
        return rng.choice(["AB-1234", "ZX-0001", "plain ascii"])
    bits = {"tinyint": 7, "smallint": 15, "int": 31, "bigint": 63, "counter": 63}
    if name in bits:
        return rng.choice(
            [
                0,
                1,
                -1,
                2 ** bits[name] - 1,
                -(2 ** bits[name]),
                rng.randint(max(-1000, -(2 ** bits[name])), min(1000, 2 ** bits[name] - 1)),
            ]
        )
    if name == "varint":
        number = (
            rng.choice([0, 10**30 + 7, -(2**70), rng.randint(-(10**6), 10**6)])
            if varint_mode != "long"
            else rng.randint(-(2**40), 2**40)
        )
        if varint_mode == "precise":
            return base64.b64encode(number.to_bytes((number.bit_length() + 8) // 8, "big", signed=True)).decode()
        return str(number) if varint_mode == "string" else number
    if name == "decimal":
        unscaled, scale = rng.randint(-(10**12), 10**12), rng.randint(0, 6)
        if decimal_mode == "precise":
            raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
            return {"scale": scale, "value": base64.b64encode(raw).decode()}
        text = f"{unscaled / 10**scale:.{scale}f}"
        return text if decimal_mode == "string" else float(text)
    if name in ("float", "double"):
        return rng.choice(
            [0.0, 1.5, -2.25, 1e10, rng.uniform(-1e6, 1e6) if name == "double" else 0.5, "NaN", "Infinity", "-Infinity"]
        )
    if name == "boolean":
        return rng.random() < 0.5
    if name == "timestamp":
        return rng.randint(-(10**11), 4 * 10**12)
    if name == "date":
        return rng.randint(-20_000, 40_000)
    if name == "time":
        return rng.randint(0, 86_400 * 10**9 - 1)
    if name == "duration":
        return rng.choice([0, 1, -1, 30 * 86_400 * 10**9, rng.randint(-(10**15), 10**15)])
    if name == "inet":
        return rng.choice(["/10.0.0.1", "/192.168.7.20", "/2001:db8:0:0:0:0:0:1", "gw.example/10.1.2.3"])
    if name == "blob":
        return base64.b64encode(rng.randbytes(rng.randint(0, 24))).decode()
    args = t.args
    if name in ("list", "set"):
        return [debezium_value(args[0], rng, decimal_mode, varint_mode) for _ in range(rng.randint(0, 3))]
    if name == "map":
        pairs = [
            (debezium_value(args[0], rng, decimal_mode, varint_mode), debezium_value(args[1], rng, decimal_mode, varint_mode))
            for _ in range(rng.randint(0, 3))
        ]
        string_keys = connect_schema(args[0], decimal_mode, varint_mode)["type"] == "string"
        return {k: v for k, v in pairs} if string_keys else [[k, v] for k, v in pairs]
    if name == "tuple":
        return {f"field{i + 1}": debezium_value(a, rng, decimal_mode, varint_mode) for i, a in enumerate(args)}
    return {f: debezium_value(parse_cql_type(c), rng) for f, c in UDT_FIELDS.get(name, ())}


class CdcSource:
    """A stream of change events across ``specs``, as one connector would publish them; ``live``
    gives them the writetimes of now (demos, benchmarks), else of a fixed past (tests)."""

    def __init__(
        self,
        specs: tuple[TableSpec, ...] = DEMO_TABLES,
        rng: Optional[random.Random] = None,
        *,
        with_schema: bool = False,
        dirty_rate: float = 0.02,
        evolve_after: Optional[int] = None,
        decimal_mode: str = "double",
        varint_mode: str = "long",
        live: bool = False,
    ):
        self.specs, self.rng, self.live = specs, rng or random.Random(0), live
        self.with_schema, self.dirty_rate, self.evolve_after = with_schema, dirty_rate, evolve_after
        self.modes = (decimal_mode, varint_mode)
        self.clock_us = 1_720_000_000_000_000
        self.position = 0
        self.rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {s.topic: {} for s in specs}
        self.order: dict[str, list[tuple[Any, ...]]] = {s.topic: [] for s in specs}  # for picking a row at random
        self.sent = 0
        self.last: Optional[Envelope] = None

    def __iter__(self) -> Iterator[Envelope]:
        while True:
            yield self.next()

    def next(self) -> Envelope:
        rng = self.rng
        spec = rng.choice(self.specs)
        rows = self.rows[spec.topic]
        self.clock_us += rng.randint(1, 5_000)
        if self.live:  # writetimes of now, as a live cluster's (else a fixed past, for reproducible tests)
            self.clock_us = max(self.clock_us, time.time_ns() // 1000)
        roll = rng.random()
        if self.last and self.last.kind == "delete" and rng.random() < 0.5:
            envelope = Envelope(self.last.topic, self.last.key, None, "tombstone")
        elif self.last and self.last.value is not None and not self.last.kind.startswith("dirty") and roll < 0.04:
            envelope = self.last._replace(kind="duplicate")
        elif 0.04 <= roll < 0.04 + self.dirty_rate:
            envelope = self._dirty(spec)
        elif not rows or roll < 0.35:
            envelope = self._insert(spec)
        else:
            envelope = self._change(spec, self._pick(spec.topic), roll)
        self.sent += 1
        self.last = envelope
        return envelope

    def _pick(self, topic: str) -> tuple[Any, ...]:
        """A live row, in O(1): ids of deleted rows linger in ``order`` until it is compacted."""
        rows, order = self.rows[topic], self.order[topic]
        if len(order) > 2 * len(rows) + 64:
            order[:] = [row for row in order if row in rows]
        while True:
            row = self.rng.choice(order)
            if row in rows:
                return row

    def _columns(self, spec: TableSpec) -> list[ColumnSpec]:
        columns = list(spec.columns)
        if self.evolve_after is not None and self.sent >= self.evolve_after and spec is self.specs[0]:
            columns.append(ColumnSpec(*EVOLVED_COLUMN))
        return columns

    def _value(self, cql: str) -> Any:
        return debezium_value(parse_cql_type(cql), self.rng, *self.modes)

    def _insert(self, spec: TableSpec) -> Envelope:
        key = {n: self._value(spec.column(n).cql_type) for n in spec.primary_key}  # type: ignore[union-attr]
        cells = {c.name: (self._value(c.cql_type), None) for c in self._columns(spec) if c.name not in spec.primary_key}
        row = tuple(json.dumps(v) for v in key.values())
        if row not in self.rows[spec.topic]:
            self.order[spec.topic].append(row)
        self.rows[spec.topic][row] = key
        return self._build(spec, "c", key, cells, self.clock_us, "insert")

    def _change(self, spec: TableSpec, row: tuple[Any, ...], roll: float) -> Envelope:
        key, writetime = self.rows[spec.topic][row], self.clock_us
        regular = [c for c in self._columns(spec) if c.name not in spec.primary_key]
        chosen = self.rng.sample(regular, k=self.rng.randint(1, min(3, len(regular))))
        if roll < 0.5:
            writetime -= self.rng.randint(10_000, 5_000_000)  # an older write, delivered late
            return self._build(
                spec, "u", key, {c.name: (self._value(c.cql_type), None) for c in chosen}, writetime, "out_of_order"
            )
        if roll < 0.6:
            return self._build(spec, "u", key, {c.name: (None, writetime) for c in chosen}, writetime, "cell_delete")
        if roll < 0.7:
            expiry = writetime + self.rng.randint(60, 86_400) * 1_000_000
            return self._build(spec, "u", key, {c.name: (self._value(c.cql_type), expiry) for c in chosen}, writetime, "ttl")
        if roll < 0.8:
            del self.rows[spec.topic][row]
            cells = {c.name: (None, writetime) for c in regular}
            if len(spec.primary_key) > 1 and self.rng.random() < 0.3:  # the whole partition
                first = spec.primary_key[0]
                key = {n: (key[n] if n == first else None) for n in spec.primary_key}
                return self._build(spec, "d", key, cells, writetime, "partition_delete")
            return self._build(spec, "d", key, cells, writetime, "delete")
        return self._build(spec, "u", key, {c.name: (self._value(c.cql_type), None) for c in chosen}, writetime, "update")

    def _dirty(self, spec: TableSpec) -> Envelope:
        key = {n: self._value(spec.column(n).cql_type) for n in spec.primary_key}  # type: ignore[union-attr]
        kind = self.rng.choice(["missing_key", "type_mismatch", "oversized", "not_json"])
        if kind == "not_json":
            return Envelope(spec.topic, json.dumps(key).encode(), b'{"op": "c", "after": {', "dirty:not_json")
        regular = next(c for c in spec.columns if c.name not in spec.primary_key and c.cql_type in ("text", "int", "uuid"))
        bad = (
            "x" * (MAX_VALUE_BYTES + 1)
            if kind == "oversized"
            else ({"nested": True} if regular.cql_type == "text" else "not-a-number")
        )
        envelope = self._build(spec, "c", key, {regular.name: (bad, None)}, self.clock_us, f"dirty:{kind}")
        if kind != "missing_key":
            return envelope
        dropped = spec.primary_key[-1]
        return self._build(spec, "c", {k: v for k, v in key.items() if k != dropped}, {}, self.clock_us, "dirty:missing_key")

    def _build(
        self,
        spec: TableSpec,
        op: str,
        key: dict[str, Any],
        cells: Mapping[str, tuple[Any, Optional[int]]],
        writetime: int,
        kind: str,
    ) -> Envelope:
        self.position += self.rng.randint(40, 400)
        after: dict[str, Any] = {name: {"value": value, "deletion_ts": None, "set": True} for name, value in key.items()}
        if op == "d":  # the connector's delete: key cells carry the deletion time too
            after = {n: {"value": v, "deletion_ts": writetime, "set": True} for n, v in key.items()}
        columns = self._columns(spec)
        for column in columns:
            if column.name not in after:
                cell = cells.get(column.name)
                after[column.name] = None if cell is None else {"value": cell[0], "deletion_ts": cell[1], "set": True}
        value = {
            "op": op,
            "ts_ms": writetime // 1000 + self.rng.randint(5, 900),
            "source": {
                "version": "3.1.0.Final",
                "connector": "cassandra",
                "name": "claims-cdc",
                "ts_ms": writetime // 1000,
                "snapshot": "false",
                "db": "NULL",
                "sequence": None,
                "ts_us": writetime,
                "ts_ns": writetime * 1000,
                "cluster": "claims-cluster",
                "file": f"CommitLog-7-{1_720_000_000 + self.position // 10**6}.log",
                "pos": self.position % 2**31,
                "keyspace": spec.keyspace,
                "table": spec.table,
            },
            "after": after,
        }
        key_doc: Any = key
        if self.with_schema:
            key_doc, value = self._with_schemas(spec, columns, key, value)
        return Envelope(spec.topic, _json(key_doc), _json(value), kind)

    def _with_schemas(
        self, spec: TableSpec, columns: list[ColumnSpec], key: dict[str, Any], value: dict[str, Any]
    ) -> tuple[Any, Any]:
        def column_schema(c: ColumnSpec) -> dict[str, Any]:
            return connect_schema(parse_cql_type(c.cql_type), *self.modes)

        cell = [
            {"type": "int64", "optional": True, "field": "deletion_ts"},
            {"type": "boolean", "optional": False, "field": "set"},
        ]
        after = [
            {
                "type": "struct",
                "fields": [{**column_schema(c), "field": "value"}, *cell],
                "optional": True,
                "name": "cell_value",
                "version": 1,
                "field": c.name,
            }
            for c in columns
        ]
        source = [
            {
                "type": "int64" if f in ("ts_ms", "ts_us", "ts_ns") else ("int32" if f == "pos" else "string"),
                "optional": f in ("sequence", "ts_us", "ts_ns"),
                "field": f,
            }
            for f in value["source"]
        ]
        name = f"io.debezium.connector.cassandra.claims-cdc.{spec.keyspace}.{spec.table}"
        envelope_schema = {
            "type": "struct",
            "name": f"{name}.Envelope",
            "optional": False,
            "fields": [
                {"type": "int64", "optional": False, "field": "ts_ms"},
                {"type": "string", "optional": False, "field": "op"},
                {"type": "struct", "fields": source, "optional": False, "name": "source", "field": "source"},
                {"type": "struct", "fields": after, "optional": False, "name": "after", "version": 1, "field": "after"},
            ],
        }
        key_fields = [{**column_schema(c), "field": c.name, "optional": False} for c in columns if c.name in key]
        key_schema = {"type": "struct", "fields": key_fields, "optional": False, "name": f"{name}.Key"}
        return {"schema": key_schema, "payload": key}, {"schema": envelope_schema, "payload": value}


def _json(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def envelopes(count: int, seed: int = 0, **options: Any) -> list[Envelope]:
    """``count`` envelopes from a seeded ``CdcSource(DEMO_TABLES, ...)``; ``options`` as its keywords."""
    source = CdcSource(DEMO_TABLES, random.Random(seed), **options)
    return [source.next() for _ in range(count)]
