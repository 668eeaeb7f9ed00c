"""The CQL type grammar, PostgreSQL column types and every value's transform, field by field."""

from __future__ import annotations

import ipaddress
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_defs.lib.cdc.types import MAX_VALUE_BYTES, TYPE_TABLE, CqlType, parse_cql_type, pg_type, to_pg
from pipeline_defs.lib.ingest.guard import RejectedRecord

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rejected(cql: str, value: object, schema: dict | None = None) -> str:
    with pytest.raises(RejectedRecord) as caught:
        to_pg(cql, value, schema)
    assert caught.value.category == "invalid"
    return caught.value.reason


# --- grammar and column types ---------------------------------------------------------------


def test_frozen_is_transparent_and_nesting_parses():
    parsed = parse_cql_type("frozen<map<text, frozen<list<int>>>>")
    assert parsed == CqlType("map", (CqlType("text"), CqlType("list", (CqlType("int"),))))
    assert parse_cql_type(" MAP < TEXT , INT > ") == CqlType("map", (CqlType("text"), CqlType("int")))
    assert parse_cql_type('frozen<"Address">') == CqlType("Address")
    assert parse_cql_type("tuple<int, text, frozen<tuple<double>>>").args[2] == CqlType("tuple", (CqlType("double"),))


@pytest.mark.parametrize(
    "bad", ["", "map<text>", "list<int", "list<int>>", "frozen<int, int>", "int<text>", "tuple<>", "text text", "list<,>"]
)
def test_malformed_types_are_refused(bad):
    with pytest.raises(ValueError):
        parse_cql_type(bad)


@pytest.mark.parametrize(
    ("cql", "pg"),
    [
        ("uuid", "uuid"),
        ("timeuuid", "uuid"),
        ("text", "text"),
        ("ascii", "text"),
        ("varchar", "text"),
        ("tinyint", "smallint"),
        ("smallint", "smallint"),
        ("int", "integer"),
        ("bigint", "bigint"),
        ("counter", "bigint"),
        ("varint", "numeric"),
        ("decimal", "numeric"),
        ("float", "real"),
        ("double", "double precision"),
        ("boolean", "boolean"),
        ("timestamp", "timestamptz"),
        ("date", "date"),
        ("time", "time"),
        ("duration", "interval"),
        ("inet", "inet"),
        ("blob", "bytea"),
        ("list<int>", "integer[]"),
        ("set<frozen<timestamp>>", "timestamptz[]"),
        ("list<frozen<list<int>>>", "jsonb"),
        ("set<frozen<address>>", "jsonb"),
        ("map<text, int>", "jsonb"),
        ("tuple<int, text>", "jsonb"),
        ("frozen<address>", "jsonb"),
    ],
)
def test_pg_types(cql, pg):
    assert pg_type(cql, ("address",)) == pg


def test_undeclared_udt_is_a_settings_error():
    with pytest.raises(ValueError, match="udts"):
        pg_type("map<text, frozen<address>>", ())


def test_type_table_covers_every_scalar():
    listed = {name.strip() for row in TYPE_TABLE for name in row[0].split(",")}
    for scalar in ("uuid", "timeuuid", "text", "varchar", "ascii", "tinyint", "smallint", "int", "bigint", "counter"):
        assert scalar in listed
    for scalar in ("varint", "decimal", "float", "double", "boolean", "timestamp", "date", "time", "duration", "inet", "blob"):
        assert scalar in listed


# --- scalars --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cql", "value", "expected"),
    [
        ("uuid", "3F2504E0-4F89-41D3-9A0C-0305E82C3301", uuid.UUID("3f2504e0-4f89-41d3-9a0c-0305e82c3301")),
        ("timeuuid", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")),
        ("text", "Zoë 見", "Zoë 見"),
        ("ascii", "AB-1", "AB-1"),
        ("tinyint", -128, -128),
        ("smallint", 32767, 32767),
        ("int", -(2**31), -(2**31)),
        ("bigint", 2**63 - 1, 2**63 - 1),
        ("counter", -(2**63), -(2**63)),
        ("varint", 10**40, Decimal(10**40)),
        ("varint", "-123456789012345678901234567890", Decimal("-123456789012345678901234567890")),
        ("varint", "AR9x+wTL", Decimal(1234567890123)),
        ("decimal", 12345.678, Decimal("12345.678")),
        ("decimal", 7, Decimal(7)),
        ("decimal", "-0.000100", Decimal("-0.000100")),
        ("decimal", {"scale": 3, "value": "ALxhTg=="}, Decimal("12345.678")),
        ("decimal", {"scale": -2, "value": "Bw=="}, Decimal("7E+2")),
        ("float", 1.5, 1.5),
        ("float", 3, 3.0),
        ("double", -2.25e300, -2.25e300),
        ("double", "Infinity", math.inf),
        ("float", "-Infinity", -math.inf),
        ("boolean", False, False),
        ("timestamp", 1562202942545, datetime(2019, 7, 4, 1, 15, 42, 545000, tzinfo=UTC)),
        ("timestamp", -1, datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        ("date", 18081, date(2019, 7, 4)),
        ("date", -719162, date(1, 1, 1)),
        ("time", 45296789012345, time(12, 34, 56, 789012)),
        ("time", 0, time(0)),
        ("duration", 93784000000123, timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("duration", -1500, timedelta(microseconds=-1)),
        ("inet", "/192.168.7.20", ipaddress.ip_address("192.168.7.20")),
        ("inet", "gw.example/2001:db8::1", ipaddress.ip_address("2001:db8::1")),
        ("inet", "10.0.0.1", ipaddress.ip_address("10.0.0.1")),
        ("blob", "AAEC/w==", b"\x00\x01\x02\xff"),
        ("blob", "", b""),
    ],
)
def test_scalars(cql, value, expected):
    result = to_pg(cql, value)
    assert result == expected
    assert type(result) is type(expected)


def test_nan_arrives_as_a_string():
    assert math.isnan(to_pg("double", "NaN"))
    assert math.isnan(to_pg("float", "NaN"))
    assert "NaN" in rejected("double", "nan")
    assert rejected("double", 1e400)  # a JSON number beyond a double parses as inf: refused


def test_varint_with_schema_reads_bytes_even_when_they_look_like_digits():
    precise = {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "0"}}
    assert to_pg("varint", "1234", precise) == Decimal(int.from_bytes(b"\xd7m\xf8", "big", signed=True))
    assert to_pg("varint", "1234", {"type": "string"}) == Decimal(1234)
    assert to_pg("varint", "1234") == Decimal(1234)


def test_null_is_null_for_every_type():
    for cql in ("int", "text", "list<int>", "map<text, int>", "frozen<address>"):
        assert to_pg(cql, None) is None


@pytest.mark.parametrize(
    ("cql", "value", "why"),
    [
        ("tinyint", 128, "out of range"),
        ("tinyint", -129, "out of range"),
        ("smallint", 32768, "out of range"),
        ("int", 2**31, "out of range"),
        ("bigint", 2**63, "out of range"),
        ("int", 1.0, "integer"),
        ("int", "1", "integer"),
        ("int", True, "integer"),
        ("boolean", 1, "true or false"),
        ("float", 3.5e38, "out of range"),
        ("float", True, "number"),
        ("double", "1.5", "number"),
        ("ascii", "café", "ASCII"),
        ("text", "a\x00b", "NUL"),
        ("ascii", "\x00", "NUL"),
        ("text", "\udcff", "UTF-8"),
        ("text", 5, "string"),
        ("uuid", "3f2504e04f8941d39a0c0305e82c3301", "UUID"),
        ("uuid", "{3f2504e0-4f89-41d3-9a0c-0305e82c3301}", "UUID"),
        ("timeuuid", "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "version 1"),
        ("varint", 1.5, "integer"),
        ("varint", "12x", "base64"),
        ("varint", "9" * 200_000, "out of range"),
        ("decimal", "1e5", "decimal"),
        ("decimal", "NaN", "decimal"),
        ("decimal", {"scale": 2}, "decimal"),
        ("decimal", {"scale": 99999, "value": "AQ=="}, "scale"),
        ("decimal", {"scale": "2", "value": "AQ=="}, "scale"),
        ("timestamp", 2**62, "years"),
        ("timestamp", "2019-07-04", "milliseconds"),
        ("date", 10**9, "years"),
        ("time", 86_400 * 10**9, "midnight"),
        ("time", -1, "midnight"),
        ("duration", 2**63, "out of range"),
        ("inet", "999.1.1.1", "address"),
        ("inet", "/fe80::1%eth0", "scoped"),
        ("inet", 167772161, "address"),
        ("blob", "AAE", "base64"),
        ("blob", "AA E=", "base64"),
        ("blob", "¿", "base64"),
    ],
)
def test_mismatches_are_invalid_with_a_reason(cql, value, why):
    assert why in rejected(cql, value)


def test_reasons_never_echo_values():
    secret = "s3cr3t-value"
    for cql in ("int", "uuid", "inet", "blob", "timestamp", "list<int>", "map<int, int>", "tuple<int>"):
        assert secret not in rejected(cql, [secret] if cql != "list<int>" else [secret, {"x": secret}])


@pytest.mark.parametrize("cql", ["text", "blob", "list<text>", "map<text, text>", "frozen<address>"])
def test_oversized_cells(cql):
    big = "A" * (MAX_VALUE_BYTES + 4)
    value = {"text": big, "blob": big, "list<text>": [big[:1000]] * 1100}.get(cql, {"k": big})
    assert rejected(cql, value) == "oversized"


# --- collections, tuples, UDTs --------------------------------------------------------------


def test_lists_and_sets_of_scalars_are_arrays_of_converted_elements():
    assert to_pg("list<timestamp>", [0, 1000]) == [datetime(1970, 1, 1, tzinfo=UTC), datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)]
    assert to_pg("set<uuid>", ["6ba7b810-9dad-11d1-80b4-00c04fd430c8"]) == [uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")]
    assert to_pg("list<blob>", ["AAE="]) == [b"\x00\x01"]
    assert to_pg("list<int>", []) == []
    assert "null element" in rejected("list<int>", [1, None])
    assert "integer" in rejected("list<int>", [1, "2"])
    assert "array" in rejected("set<int>", {"a": 1})


def test_nested_collections_become_plain_json():
    assert to_pg("list<frozen<map<text, int>>>", [{"a": 1}, {}]) == [{"a": 1}, {}]
    value = to_pg("list<frozen<list<timestamp>>>", [[0]])
    assert value == [["1970-01-01T00:00:00+00:00"]]
    assert to_pg("set<frozen<list<double>>>", [["NaN", 1.5]]) == [["NaN", 1.5]]
    assert to_pg("list<frozen<tuple<blob, decimal>>>", [{"field1": "AAE=", "field2": 1.25}]) == [["AAE=", "1.25"]]


def test_maps_take_objects_and_pairs_and_render_keys_as_text():
    assert to_pg("map<text, double>", {"pi": 3.14, "inf": "Infinity"}) == {"pi": 3.14, "inf": "Infinity"}
    assert to_pg("map<int, text>", [[1, "one"], [2, "two"]]) == {"1": "one", "2": "two"}
    assert to_pg("map<uuid, inet>", {"6ba7b810-9dad-11d1-80b4-00c04fd430c8": "/10.0.0.1"}) == {
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8": "10.0.0.1"
    }
    assert to_pg("map<text, frozen<list<int>>>", {"a": [1, 2]}) == {"a": [1, 2]}
    assert to_pg("map<timestamp, duration>", [[0, 5]]) == {"1970-01-01T00:00:00+00:00": 5}
    assert "null" in rejected("map<text, int>", {"a": None})
    assert "integer" in rejected("map<int, int>", {"1": 1})  # an int key never arrives as a string
    assert "pairs" in rejected("map<int, int>", [[1, 2, 3]])
    assert "NUL" in rejected("map<text, int>", {"a\x00": 1})


def test_tuples_become_arrays():
    assert to_pg("tuple<int, text, blob>", {"field1": 7, "field2": "seven", "field3": "Bw=="}) == [7, "seven", "Bw=="]
    assert to_pg("tuple<int, text>", [7, None]) == [7, None]
    assert to_pg("tuple<int, text>", {"field1": 7}) == [7, None]
    assert "field1" in rejected("tuple<int, text>", {"field3": 1})
    assert "array of 2" in rejected("tuple<int, text>", [1])
    assert "integer" in rejected("tuple<int, text>", ["x", "y"])


def test_udts_are_kept_as_sent_after_checking_they_are_storable_json():
    address = {"street": "1 Main St", "city": None, "geo": {"lat": 1.5}, "tags": ["a"]}
    assert to_pg("frozen<address>", address) == address
    assert "object" in rejected("address", ["street"])
    assert "NUL" in rejected("address", {"street": "a\x00"})
    assert "out of range" in rejected("address", {"n": math.inf})


# --- property tests -------------------------------------------------------------------------

SCALARS = ["uuid", "timeuuid", "text", "ascii", "tinyint", "smallint", "int", "bigint", "varint", "decimal", "float", "double"]
SCALARS += ["boolean", "timestamp", "date", "time", "duration", "inet", "blob", "counter", "varchar"]
cql_types = st.recursive(
    st.sampled_from(SCALARS),
    lambda inner: st.one_of(
        inner.map(lambda t: f"list<frozen<{t}>>"),
        inner.map(lambda t: f"set<frozen<{t}>>"),
        st.tuples(inner, inner).map(lambda kv: f"map<frozen<{kv[0]}>, frozen<{kv[1]}>>"),
        st.lists(inner, min_size=1, max_size=3).map(lambda ts: f"tuple<{', '.join(ts)}>"),
    ),
    max_leaves=6,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["NaN", "Infinity", "AAE=", "/10.0.0.1", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "12.5", "\x00"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(PROPERTY)
@given(cql_types, json_values)
def test_any_value_of_any_type_converts_or_is_rejected(cql, value):
    try:
        result = to_pg(cql, value)
    except RejectedRecord as rejection:
        assert rejection.category == "invalid"
        return
    if pg_type(cql) == "jsonb" and value is not None:
        assert isinstance(result, (dict, list))


schemas = st.recursive(
    st.fixed_dictionaries(
        {}, optional={"type": st.sampled_from(["bytes", "string", "struct", "int64"]), "name": st.text(max_size=5)}
    ),
    lambda children: st.fixed_dictionaries(
        {},
        optional={
            "items": children,
            "keys": children,
            "values": children,
            "fields": st.one_of(st.lists(children.map(lambda c: {**c, "field": "field1"}), max_size=2), json_values),
            "parameters": st.one_of(st.dictionaries(st.just("scale"), json_values), json_values),
        },
    ),
    max_leaves=6,
)


@settings(PROPERTY)
@given(cql_types, json_values, st.one_of(schemas, json_values))
def test_any_schema_hint_converts_or_is_rejected(cql, value, schema):
    try:
        to_pg(cql, value, schema)
    except RejectedRecord as rejection:
        assert rejection.category == "invalid"


@settings(PROPERTY)
@given(st.text(max_size=60))
def test_the_grammar_answers_or_raises_value_error(text):
    try:
        parsed = parse_cql_type(text)
    except ValueError:
        return
    assert isinstance(parsed, CqlType)


@settings(PROPERTY)
@given(st.integers(-(2**63), 2**63 - 1))
def test_timestamps_and_durations_in_range_or_refused(number):
    for cql in ("timestamp", "duration", "time", "date"):
        try:
            to_pg(cql, number)
        except RejectedRecord:
            continue
