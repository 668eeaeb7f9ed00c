"""CQL types as PostgreSQL columns: the type grammar, the column type, and each value as psycopg 3
binary COPY takes it. Values arrive as Debezium's Cassandra connector writes them through Kafka
Connect's JSON converter (https://debezium.io/documentation/reference/stable/connectors/cassandra.html#cassandra-data-types);
anything else is refused with a reason, never an exception of another kind.

TYPE_TABLE (below) is the README's table. Rules behind it:

* ``frozen<T>`` is ``T``. A list or set of a scalar element becomes a PostgreSQL array of that
  element's type; a list or set of collections, tuples or UDTs becomes jsonb (PostgreSQL arrays
  cannot nest ragged values). Maps, tuples and UDTs are always jsonb.
* Inside jsonb every value is plain JSON: uuid, inet, decimal, timestamp, date and time as strings
  (ISO 8601 for instants, exact text for decimals), blob as base64, NaN/Infinity as strings,
  duration as integer nanoseconds, a map as an object whose keys are the keys' JSON text, a tuple
  as an array, a UDT as the object Debezium sent.
* duration becomes ``interval``: Debezium sends an approximate nanosecond count (months folded in
  at 30.4375 days), so a real interval is the most useful faithful form; PostgreSQL keeps
  microseconds, the last three digits are truncated.
* time keeps microseconds (PostgreSQL's resolution); sub-microsecond nanos are truncated.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Optional

from pipeline_defs.lib.ingest.guard import RejectedRecord

MAX_VALUE_BYTES = 1 << 20  # one cell, measured on its JSON form

TYPE_TABLE: tuple[tuple[str, str, str], ...] = (
    # (CQL type, PostgreSQL type, JSON form Debezium sends)
    ("uuid, timeuuid", "uuid", 'string "8-4-4-4-12" (timeuuid: version 1)'),
    ("text, varchar", "text", "string (no NUL)"),
    ("ascii", "text", "string, ASCII only (no NUL)"),
    ("tinyint, smallint", "smallint", "integer in the CQL type's range"),
    ("int", "integer", "integer"),
    ("bigint, counter", "bigint", "integer"),
    ("varint", "numeric", "integer (long mode), digit string (string mode), base64 two's complement (precise mode)"),
    ("decimal", "numeric", 'number (double mode), plain string (string mode), {"scale", "value": base64} (precise mode)'),
    ("float", "real", 'number or "NaN" / "Infinity" / "-Infinity"'),
    ("double", "double precision", 'number or "NaN" / "Infinity" / "-Infinity"'),
    ("boolean", "boolean", "true / false"),
    ("timestamp", "timestamptz", "integer, milliseconds since the epoch"),
    ("date", "date", "integer, days since the epoch"),
    ("time", "time", "integer, nanoseconds since midnight"),
    ("duration", "interval", "integer, nanoseconds (approximate: io.debezium.time.NanoDuration)"),
    ("inet", "inet", 'string, Java InetAddress.toString() ("/10.0.0.1" or "host/10.0.0.1")'),
    ("blob", "bytea", "string, base64"),
    ("list<T>, set<T> (T scalar)", "T[]", "array"),
    ("list<T>, set<T> (T collection, tuple, UDT)", "jsonb", "array"),
    ("map<K, V>", "jsonb", "object (string keys) or array of [key, value] pairs (other keys)"),
    ("tuple<...>", "jsonb (array)", 'object {"field1": ..., "field2": ...} or array'),
    ("UDT", "jsonb (object)", "object, field name -> value"),
)

_SCALAR_PG = {
    "uuid": "uuid",
    "timeuuid": "uuid",
    "text": "text",
    "varchar": "text",
    "ascii": "text",
    "tinyint": "smallint",
    "smallint": "smallint",
    "int": "integer",
    "bigint": "bigint",
    "counter": "bigint",
    "varint": "numeric",
    "decimal": "numeric",
    "float": "real",
    "double": "double precision",
    "boolean": "boolean",
    "timestamp": "timestamptz",
    "date": "date",
    "time": "time",
    "duration": "interval",
    "inet": "inet",
    "blob": "bytea",
}
_ARITY = {"list": 1, "set": 1, "map": 2, "frozen": 1}


@dataclass(frozen=True)
class CqlType:
    """A parsed CQL type: a scalar (``args`` empty), list/set/map/tuple (``args`` their element
    types), or a UDT (``name`` not a CQL type name)."""

    name: str
    args: tuple[CqlType, ...] = ()

    @property
    def is_scalar(self) -> bool:
        return self.name in _SCALAR_PG

    @property
    def is_udt(self) -> bool:
        return self.name not in _SCALAR_PG and self.name not in ("list", "set", "map", "tuple")


_TOKEN = re.compile(r'\s*(?:([<>,])|("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?))')


@lru_cache(maxsize=1024)
def parse_cql_type(text: str) -> CqlType:
    """``text`` as CQL writes a column type; ``ValueError`` if it is not one (settings, not data)."""
    tokens: list[str] = []
    pos = 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ValueError(f"not a CQL type at character {pos}")
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
    parsed, rest = _parse(tokens, 0)
    if rest != len(tokens):
        raise ValueError("trailing text after the CQL type")
    return parsed


def _parse(tokens: list[str], at: int) -> tuple[CqlType, int]:
    if at >= len(tokens) or tokens[at] in "<>,":
        raise ValueError("a CQL type name was expected")
    word = tokens[at]
    name = word[1:-1].replace('""', '"') if word.startswith('"') else word.lower()
    at += 1
    args: list[CqlType] = []
    if at < len(tokens) and tokens[at] == "<":
        while True:
            arg, at = _parse(tokens, at + 1)
            args.append(arg)
            if at < len(tokens) and tokens[at] == ",":
                continue
            if at < len(tokens) and tokens[at] == ">":
                at += 1
                break
            raise ValueError(f"unclosed <...> after {name}")
    expected = _ARITY.get(name, len(args) if name == "tuple" and args else 0)
    if len(args) != expected:
        raise ValueError(f"{name} takes {expected} type argument(s), got {len(args)}")
    return (args[0], at) if name == "frozen" else (CqlType(name, tuple(args)), at)


def _as_type(cql_type: CqlType | str) -> CqlType:
    return parse_cql_type(cql_type) if isinstance(cql_type, str) else cql_type


def pg_type(cql_type: CqlType | str, udts: tuple[str, ...] | list[str] = ()) -> str:
    """The PostgreSQL column type for a CQL type (see TYPE_TABLE); ``ValueError`` for a UDT not in ``udts``."""
    parsed = _as_type(cql_type)
    if parsed.is_scalar:
        return _SCALAR_PG[parsed.name]
    for arg in parsed.args:
        pg_type(arg, udts)  # every nested UDT must be declared too
    if parsed.is_udt and parsed.name not in udts:
        raise ValueError(f"unknown CQL type {parsed.name!r}: declare the UDT in the table's udts")
    if parsed.name in ("list", "set") and parsed.args[0].is_scalar:
        return _SCALAR_PG[parsed.args[0].name] + "[]"
    return "jsonb"


def reject(reason: str) -> RejectedRecord:
    return RejectedRecord("invalid", reason)


def to_pg(cql_type: CqlType | str, value: Any, schema: Optional[dict[str, Any]] = None) -> Any:
    """``value`` (Debezium's JSON form) as the Python value psycopg binary-COPYs into
    ``pg_type(cql_type)``; ``RejectedRecord('invalid', ...)`` if it does not fit. ``schema`` is the
    value's Kafka Connect schema when the event carries one: it settles how varint was encoded.
    jsonb values are always a dict or a list (so COPY's ``set_types`` dumps them as jsonb)."""
    parsed = _as_type(cql_type)
    if value is None:
        return None
    if json_size(value, MAX_VALUE_BYTES) > MAX_VALUE_BYTES:
        raise reject("oversized")
    return _convert(parsed, value, schema if isinstance(schema, dict) else None, nested=False)


def _convert(t: CqlType, value: Any, schema: Optional[dict[str, Any]], nested: bool) -> Any:
    if t.is_scalar:
        scalar = _SCALARS[t.name](value, schema, t.name)
        return _jsonable(t.name, scalar, value) if nested else scalar
    if t.is_udt:
        if not isinstance(value, dict):
            raise reject(f"{t.name}: a UDT is a JSON object")
        return json_value(value)
    if t.name in ("list", "set"):
        if not isinstance(value, list):
            raise reject(f"{t.name}: a JSON array was expected")
        if any(item is None for item in value):
            raise reject(f"{t.name}: null element")
        element, items = t.args[0], _sub(schema, "items")
        inner_nested = nested or not element.is_scalar
        return [_convert(element, item, items, inner_nested) for item in value]
    if t.name == "map":
        return _map(t, value, schema)
    return _tuple(t, value, schema)


def _map(t: CqlType, value: Any, schema: Optional[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        pairs = [(p[0], p[1]) for p in value]
    else:
        raise reject("map: a JSON object or an array of [key, value] pairs was expected")
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key is None or item is None:
            raise reject("map: null key or value")
        json_key = _convert(t.args[0], key, _sub(schema, "keys"), nested=True)
        text_key = json_key if isinstance(json_key, str) else json.dumps(json_key, separators=(",", ":"))
        result[text_key] = _convert(t.args[1], item, _sub(schema, "values"), nested=True)
    return result


def _tuple(t: CqlType, value: Any, schema: Optional[dict[str, Any]]) -> list[Any]:
    names = [f"field{i + 1}" for i in range(len(t.args))]
    if isinstance(value, dict):
        if not set(value) <= set(names):
            raise reject(f"tuple: fields other than field1..field{len(names)}")
        items = [value.get(name) for name in names]
    elif isinstance(value, list) and len(value) == len(names):
        items = list(value)
    else:
        raise reject(f"tuple: an object field1..field{len(names)} or an array of {len(names)} was expected")
    listed = _sub(schema, "fields")
    fields = {f.get("field"): f for f in listed if isinstance(f, dict)} if isinstance(listed, list) else {}
    return [
        None if item is None else _convert(arg, item, fields.get(name), nested=True)
        for arg, item, name in zip(t.args, items, names)
    ]


def _sub(schema: Any, key: str) -> Any:
    return schema.get(key) if isinstance(schema, dict) else None


# --- scalars -------------------------------------------------------------------------------

_INT_RANGE = {"tinyint": 7, "smallint": 15, "int": 31, "bigint": 63, "counter": 63}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGITS = re.compile(r"-?[0-9]+")
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NANOS_PER_DAY = 86_400 * 10**9
_NUMERIC_MAX_INT_DIGITS, _NUMERIC_MAX_SCALE = 131_072, 16_383  # PostgreSQL numeric's limits


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(value: Any, _schema: Any, name: str) -> int:
    bits = _INT_RANGE[name]
    if not _is_int(value):
        raise reject(f"{name}: an integer was expected")
    if not -(2**bits) <= value < 2**bits:
        raise reject(f"{name}: out of range")
    return int(value)


def _text(value: Any, _schema: Any, name: str) -> str:
    if not isinstance(value, str):
        raise reject(f"{name}: a string was expected")
    if name == "ascii" and not value.isascii():
        raise reject("ascii: non-ASCII characters")
    return storable_text(value, name)


def storable_text(value: str, what: str) -> str:
    """PostgreSQL text and jsonb cannot hold NUL, and UTF-8 cannot hold lone surrogates."""
    if "\x00" in value:
        raise reject(f"{what}: NUL character (not storable in PostgreSQL)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise reject(f"{what}: not encodable as UTF-8 (lone surrogate)") from None
    return value


def _uuid(value: Any, _schema: Any, name: str) -> uuid.UUID:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise reject(f"{name}: a UUID string was expected")
    parsed = uuid.UUID(value)
    if name == "timeuuid" and parsed.version != 1:
        raise reject("timeuuid: not a version 1 UUID")
    return parsed


def _float(value: Any, _schema: Any, name: str) -> float:
    if isinstance(value, str) and value in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value]
    if not (_is_int(value) or isinstance(value, float)):
        raise reject(f"{name}: a number or NaN/Infinity/-Infinity was expected")
    try:
        number = float(value)
        if not math.isfinite(number):
            raise OverflowError
        if name == "float":
            struct.pack(">f", number)  # refuses what a 4-byte float cannot hold
    except OverflowError:
        raise reject(f"{name}: out of range") from None
    return number


def _boolean(value: Any, _schema: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise reject("boolean: true or false was expected")
    return value


def _numeric(number: Decimal, name: str) -> Decimal:
    if not number.is_finite():
        raise reject(f"{name}: not a finite number")
    exponent = int(number.as_tuple().exponent)
    if number.adjusted() >= _NUMERIC_MAX_INT_DIGITS or -exponent > _NUMERIC_MAX_SCALE:
        raise reject(f"{name}: out of range for numeric")
    return number


def _connect_decimal(text: Any, scale: Any, name: str) -> Decimal:
    """Kafka Connect's Decimal bytes: a base64 big-endian two's complement unscaled integer."""
    raw = _base64(text, None, name)
    if not raw or not _is_int(scale) or not -_NUMERIC_MAX_SCALE <= scale <= _NUMERIC_MAX_SCALE:
        raise reject(f"{name}: bad unscaled value or scale")
    if len(raw) > _NUMERIC_MAX_INT_DIGITS // 2:  # more digits than numeric holds, whatever the scale
        raise reject(f"{name}: out of range for numeric")
    return _numeric(Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale), name)


def _schema_scale(schema: Optional[dict[str, Any]]) -> Optional[int]:
    """The ``scale`` parameter of a Connect Decimal schema (JSON writes parameters as strings)."""
    parameters = _sub(schema, "parameters")
    scale = parameters.get("scale", "0") if isinstance(parameters, dict) else "0"
    return int(scale) if isinstance(scale, str) and _DIGITS.fullmatch(scale) and len(scale) < 7 else None


def _varint(value: Any, schema: Optional[dict[str, Any]], name: str) -> Decimal:
    """long mode: an integer; string mode: digits; precise mode: Connect Decimal bytes. Without a
    schema a digit string is read as digits (string mode), anything else as base64."""
    if _is_int(value):
        return _numeric(Decimal(value), name)
    if not isinstance(value, str):
        raise reject(f"{name}: an integer, a digit string or base64 bytes was expected")
    declared_bytes = _sub(schema, "type") == "bytes"
    if not declared_bytes and _DIGITS.fullmatch(value):
        if len(value) > _NUMERIC_MAX_INT_DIGITS + 1:
            raise reject(f"{name}: out of range for numeric")
        return _numeric(Decimal(value), name)
    return _connect_decimal(value, _schema_scale(schema) if declared_bytes else 0, name)


def _decimal(value: Any, schema: Optional[dict[str, Any]], name: str) -> Decimal:
    if _is_int(value):
        return _numeric(Decimal(value), name)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise reject("decimal: out of range")
        return _numeric(Decimal(repr(value)), name)
    if isinstance(value, str) and _PLAIN_DECIMAL.fullmatch(value):
        return _numeric(Decimal(value), name)
    if isinstance(value, dict) and set(value) == {"scale", "value"}:
        return _connect_decimal(value["value"], value["scale"], name)
    if isinstance(value, str) and _sub(schema, "type") == "bytes":
        return _varint(value, schema, name)
    raise reject("decimal: a number, a plain decimal string or {scale, value} was expected")


def _timestamp(value: Any, _schema: Any, name: str) -> datetime:
    millis = _integer(value, None, "bigint") if _is_int(value) else None
    if millis is None:
        raise reject("timestamp: integer milliseconds since the epoch were expected")
    try:
        moment = _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        raise reject("timestamp: outside years 1-9999") from None
    return moment


def _date(value: Any, _schema: Any, name: str) -> date:
    if not _is_int(value):
        raise reject("date: integer days since the epoch were expected")
    try:
        return date(1970, 1, 1) + timedelta(days=value)
    except OverflowError:
        raise reject("date: outside years 1-9999") from None


def _time(value: Any, _schema: Any, name: str) -> time:
    if not _is_int(value) or not 0 <= value < _NANOS_PER_DAY:
        raise reject("time: integer nanoseconds since midnight (under 24h) were expected")
    micros = value // 1000
    return time(micros // 3_600_000_000, micros // 60_000_000 % 60, micros // 1_000_000 % 60, micros % 1_000_000)


def _duration(value: Any, _schema: Any, name: str) -> timedelta:
    nanos = _integer(value, None, "bigint") if _is_int(value) else None
    if nanos is None:
        raise reject("duration: integer nanoseconds were expected")
    return timedelta(microseconds=nanos // 1000 if nanos >= 0 else -(-nanos // 1000))


def _inet(value: Any, _schema: Any, name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str) or len(value) > 300:
        raise reject("inet: an address string was expected")
    try:
        address = ipaddress.ip_address(value.rpartition("/")[2])  # Java: "hostname/literal"
    except ValueError:
        raise reject("inet: not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise reject("inet: scoped IPv6 addresses are not storable")
    return address


def _base64(value: Any, _schema: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value.isascii():
        raise reject(f"{name}: a base64 string was expected")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error:
        raise reject(f"{name}: not valid base64") from None


_SCALARS: dict[str, Callable[[Any, Optional[dict[str, Any]], str], Any]] = {
    **dict.fromkeys(("uuid", "timeuuid"), _uuid),
    **dict.fromkeys(("text", "varchar", "ascii"), _text),
    **dict.fromkeys(_INT_RANGE, _integer),
    **dict.fromkeys(("float", "double"), _float),
    "varint": _varint,
    "decimal": _decimal,
    "boolean": _boolean,
    "timestamp": _timestamp,
    "date": _date,
    "time": _time,
    "duration": _duration,
    "inet": _inet,
    "blob": _base64,
}


def _jsonable(name: str, scalar: Any, raw: Any) -> Any:
    """A converted scalar as plain JSON for a jsonb column."""
    if isinstance(scalar, float) and not math.isfinite(scalar):
        return "NaN" if math.isnan(scalar) else ("Infinity" if scalar > 0 else "-Infinity")
    if name == "duration":
        return raw
    if isinstance(scalar, bytes):
        return base64.b64encode(scalar).decode("ascii")
    if isinstance(scalar, (datetime, date, time)):
        return scalar.isoformat()
    if isinstance(scalar, (uuid.UUID, Decimal, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(scalar)
    return scalar


def to_jsonb(value: Any) -> Any:
    """Any JSON value for a jsonb column (a column the envelope brought, of no known CQL type)."""
    if value is None:
        return None
    if json_size(value, MAX_VALUE_BYTES) > MAX_VALUE_BYTES:
        raise reject("oversized")
    return json_value(value)


def json_value(value: Any) -> Any:
    """``value`` checked as storable jsonb: no NaN/Infinity numbers, no NUL, valid UTF-8."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise reject("jsonb: number out of range")
        if isinstance(item, str):
            storable_text(item, "jsonb")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif not (item is None or isinstance(item, (bool, int, float))):
            raise reject("jsonb: not a JSON value")
    return value


def json_size(value: Any, limit: int) -> int:
    """About how many bytes ``value`` takes as JSON; stops counting once past ``limit``."""
    size, pending = 0, [value]
    while pending and size <= limit:
        item = pending.pop()
        if isinstance(item, str):
            size += len(item) + 2
        elif isinstance(item, dict):
            size += 2 + len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            size += 2 + len(item)
            pending.extend(item)
        elif _is_int(item) and abs(item) > 10**18:
            size += item.bit_length() // 3
        else:
            size += 8
    return size
