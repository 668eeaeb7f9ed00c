"""Debezium's Cassandra change events, read into ``ChangeEvent``s.

The format is Debezium's (https://debezium.io/documentation/reference/stable/connectors/cassandra.html#cassandra-events),
through Kafka Connect's JSON converter with schemas (``{"schema": ..., "payload": ...}``) or
without (the payload alone). The value holds ``op``, ``ts_ms`` (when the connector processed
it), ``source`` and ``after``, where each column is ``{"value", "deletion_ts", "set"}`` or null
(not part of the mutation); there is no ``before``. The record key holds the primary key.

Where the documentation and the connector disagree, both are read:

* ``op``: the text says ``i`` for an insert, the example says ``c``; both mean ``Op.CREATE``. The
  connector also has ``r`` (a range tombstone); the documentation lists range deletes as not
  supported, so ``r`` is refused, not silently dropped.
* the writetime: the documentation gives ``source.ts_ms`` in microseconds (``timestamp-micros``);
  connectors since Debezium 1.0 put milliseconds there and, since 2.6, the microseconds in
  ``source.ts_us``. ``ts_us`` wins; a ``ts_ms`` is microseconds unless it is too small to be
  (under 10^14: before 1973 in microseconds), then milliseconds. ``deletion_ts`` is read the same way.
* a partition deletion on a table with clustering columns comes as ``op: d`` whose clustering
  columns are null (the connector's ``handlePartitionDeletion``): a ``range_delete`` of the key prefix.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, RootModel, StrictBool, StrictInt, StrictStr, ValidationError

from pipeline_defs.lib.cdc.model import Cell, ChangeEvent, NewColumn, Op, TableSpec
from pipeline_defs.lib.cdc.types import parse_cql_type, pg_type, reject, to_jsonb, to_pg
from pipeline_defs.lib.ingest.guard import RejectedRecord
from pipeline_defs.lib.validation.fields import parsed, rejection_from

OPS = {"c": Op.CREATE, "i": Op.CREATE, "u": Op.UPDATE, "d": Op.DELETE}
MILLIS_BELOW = 10**14  # a documented-microsecond timestamp this small can only be milliseconds
_INT64 = 2**63


class _Document(RootModel[dict[str, Any]]):
    """Any JSON object: the strict loader of ``parsed`` and nothing more."""


class _CellModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    value: Any = None
    deletion_ts: Optional[StrictInt] = None
    set: StrictBool = True


class _Source(BaseModel):
    model_config = ConfigDict(extra="ignore")
    keyspace: StrictStr
    table: StrictStr
    ts_ms: Optional[StrictInt] = None
    ts_us: Optional[StrictInt] = None
    file: StrictStr = ""
    pos: Optional[StrictInt] = None
    position: Optional[StrictInt] = None


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    op: StrictStr
    source: _Source
    after: Optional[dict[str, Optional[_CellModel]]] = None


def parse_change(value: Optional[bytes], key: Optional[bytes], spec: TableSpec) -> Optional[ChangeEvent]:
    """The change a record carries, ``None`` for a Kafka tombstone (a null value after a delete:
    the caller skips it), or a ``RejectedRecord``: ``malformed`` for bytes that are not JSON,
    ``invalid`` for anything else wrong. No other exception escapes, whatever the bytes."""
    if value is None:
        return None
    try:
        return _parse(value, key, spec)
    except RejectedRecord as rejection:
        raise RejectedRecord(rejection.category, _printable(rejection.reason, 500)) from None


def _parse(value: bytes, key: Optional[bytes], spec: TableSpec) -> ChangeEvent:
    document, schema = _unwrap(parsed(_Document, value).root)
    try:
        payload = _Payload.model_validate(document)
    except ValidationError as error:
        raise rejection_from(error) from None
    if payload.op == "r":
        raise reject("op: range tombstones (r) are not supported")
    if payload.op not in OPS:
        raise reject("op: not one of c, i, u, d")
    op, source = OPS[payload.op], payload.source
    if (source.keyspace, source.table) != (spec.keyspace, spec.table):
        raise reject("source: keyspace/table is not this table's")
    writetime, slack = _writetime(source)
    after = payload.after or {}
    cell_schemas = _after_schemas(schema)
    row_key = _key(key, after, cell_schemas, spec, op)
    range_delete = _range_prefix(row_key, spec) if op is Op.DELETE else None
    cells: dict[str, Cell] = {}
    new_columns: list[NewColumn] = []
    if op is not Op.DELETE:
        for name, cell in after.items():
            if cell is None or not cell.set or name in spec.primary_key:
                continue
            column = spec.column(name)
            if column is None:
                new_columns.append(_new_column(name, cell, cell_schemas.get(name), writetime + slack))
            else:
                cells[name] = _cell(name, column.cql_type, cell, cell_schemas.get(name), writetime + slack)
    return ChangeEvent(
        op=op,
        table=spec,
        key=row_key,
        cells=cells,
        writetime_us=writetime,
        position=f"{source.file[:200]}:{source.pos if source.pos is not None else source.position}",
        new_columns=tuple(new_columns),
        range_delete=range_delete,
    )


def _unwrap(document: dict[str, Any]) -> tuple[Any, Optional[dict[str, Any]]]:
    """The payload and its schema (JSON converter with schemas), or the document and no schema."""
    schema = document.get("schema")
    if set(document) == {"schema", "payload"} and isinstance(schema, dict) and schema.get("type") == "struct":
        return document["payload"], schema
    return document, None


def _fields(schema: Any) -> dict[str, dict[str, Any]]:
    fields = schema.get("fields") if isinstance(schema, dict) else None
    if not isinstance(fields, list):
        return {}
    return {f["field"]: f for f in fields if isinstance(f, dict) and isinstance(f.get("field"), str)}


def _after_schemas(schema: Optional[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Column -> the Connect schema of its ``value`` (the cell struct's ``value`` field)."""
    columns = _fields(_fields(schema).get("after"))
    return {name: value for name, cell in columns.items() if (value := _fields(cell).get("value")) is not None}


def _as_micros(timestamp: int) -> int:
    return timestamp * 1000 if 0 <= timestamp < MILLIS_BELOW else timestamp


def _writetime(source: _Source) -> tuple[int, int]:
    """The writetime in microseconds, and how far it may lie below the true one (a millisecond
    ``ts_ms`` drops the last three digits: a deletion up to 999 µs later is still at the writetime)."""
    if source.ts_us is not None:
        writetime, slack = source.ts_us, 0
    elif source.ts_ms is not None:
        writetime = _as_micros(source.ts_ms)
        slack = 999 if writetime != source.ts_ms else 0
    else:
        raise reject("source: ts_ms (the writetime) is missing")
    if not -_INT64 <= writetime < _INT64:
        raise reject("source: writetime out of range")
    return writetime, slack


def _key(
    key: Optional[bytes], after: dict[str, Optional[_CellModel]], cell_schemas: dict[str, Any], spec: TableSpec, op: Op
) -> dict[str, Any]:
    """Every primary key column's value: from the record key, checked against ``after``'s."""
    from_after = {name: cell.value for name, cell in after.items() if cell is not None and name in spec.primary_key}
    if key is not None:
        raw, key_schema = _unwrap(parsed(_Document, key).root)
        if not isinstance(raw, dict):
            raise reject("key: not a JSON object")
        schemas = _fields(key_schema)
    else:
        raw, schemas = from_after, cell_schemas
    row_key: dict[str, Any] = {}
    for name in spec.primary_key:
        if name not in raw:
            raise reject(f"key: missing key column {name}")
        column = spec.column(name)
        cql_type = column.cql_type if column else "blob"
        row_key[name] = _column_value(name, cql_type, raw[name], schemas.get(name))
        in_after = name in from_after and key is not None
        if in_after and _column_value(name, cql_type, from_after[name], cell_schemas.get(name)) != row_key[name]:
            raise reject(f"key: key and after disagree on key column {name}")
        if row_key[name] is None and (op is not Op.DELETE or name not in spec.primary_key[1:]):
            raise reject(f"key: key column {name} is null")
    return row_key


def _range_prefix(row_key: dict[str, Any], spec: TableSpec) -> Optional[dict[str, Any]]:
    """The key prefix a delete with null trailing key columns covers; ``None`` for a row delete."""
    present = [name for name in spec.primary_key if row_key[name] is not None]
    if len(present) == len(spec.primary_key):
        return None
    if present != list(spec.primary_key[: len(present)]):
        raise reject("key: null key columns are not a trailing run")
    return {name: row_key[name] for name in present}


def _column_value(name: str, cql_type: str, value: Any, schema: Any) -> Any:
    try:
        return to_pg(cql_type, value, schema)
    except RejectedRecord as rejection:
        raise reject(f"column {_printable(name)}: {rejection.reason}") from None


def _cell(name: str, cql_type: str, cell: _CellModel, schema: Any, deleted_by: int) -> Cell:
    """A deletion_ts at or before the writetime (``deleted_by``) deletes the cell; a later one is its TTL."""
    if cell.deletion_ts is not None and _as_micros(cell.deletion_ts) <= deleted_by:
        return Cell(value=None, deleted=True)
    expires = _as_micros(cell.deletion_ts) if cell.deletion_ts is not None else None
    return Cell(value=_column_value(name, cql_type, cell.value, schema), expires_at_us=expires)


_CONNECT_TO_CQL = {
    "io.debezium.time.Timestamp": "timestamp",
    "io.debezium.time.Date": "date",
    "io.debezium.data.Uuid": "uuid",
    "io.debezium.time.NanoDuration": "duration",
    "org.apache.kafka.connect.data.Decimal": "varint",
    "io.debezium.data.VariableScaleDecimal": "decimal",
    "int8": "tinyint",
    "int16": "smallint",
    "int32": "int",
    "int64": "bigint",
    "float32": "float",
    "float64": "double",
    "boolean": "boolean",
    "string": "text",
    "bytes": "blob",
}


def _new_column(name: str, cell: _CellModel, schema: Any, deleted_by: int) -> NewColumn:
    """A column the spec lacks: its type from the Connect schema if any, else from the value."""
    printable = _printable(name)
    if not name or len(name.encode("utf-8", "replace")) > 63 or printable != name:
        raise reject(f"new column {printable}: name empty, unprintable or longer than PostgreSQL allows")
    deleted = cell.deletion_ts is not None and _as_micros(cell.deletion_ts) <= deleted_by
    value = None if deleted else cell.value
    cql = (
        _CONNECT_TO_CQL.get(str(schema.get("name")), _CONNECT_TO_CQL.get(str(schema.get("type"))))
        if isinstance(schema, dict)
        else None
    )
    if cql is None and schema is None and value is not None:
        cql = _cql_from_value(value)
    if cql is None:
        try:
            return NewColumn(name, "jsonb", to_jsonb(value))
        except RejectedRecord as rejection:
            raise reject(f"new column {printable}: {rejection.reason}") from None
    return NewColumn(name, pg_type(parse_cql_type(cql)), _column_value(name, cql, value, schema))


def _cql_from_value(value: Any) -> Optional[str]:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint" if -_INT64 <= value < _INT64 else "varint"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "text"
    return None


def _printable(text: str, limit: int = 64) -> str:
    """A field name (or a reason naming one) fit for a DLQ: printable and short."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])
