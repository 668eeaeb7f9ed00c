"""Debezium Cassandra envelopes, with and without schemas, from the documentation's own examples
to hostile bytes: a ChangeEvent, None for a Kafka tombstone, or a RejectedRecord, nothing else."""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_defs.lib.cdc.envelope import parse_change
from pipeline_defs.lib.cdc.model import Cell, ColumnSpec, NewColumn, Op, TableSpec
from pipeline_defs.lib.ingest.guard import RejectedRecord
from pipeline_sim.cdc import DEMO_TABLES, envelopes

FIXTURES = Path(__file__).parent / "fixtures"
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CUSTOMERS = TableSpec(
    "inventory",
    "customers",
    (
        ColumnSpec("id", "bigint"),
        ColumnSpec("registration_date", "timestamp"),
        ColumnSpec("first_name", "text"),
        ColumnSpec("last_name", "text"),
        ColumnSpec("email", "text"),
    ),
    ("id", "registration_date"),
)
ALL_TYPES = TableSpec(
    "inventory",
    "all_types",
    tuple(ColumnSpec(n, c) for n, c in json.loads((FIXTURES / "all_types_columns.json").read_text())),
    ("id", "seq"),
    ("address",),
)
REGISTERED = datetime(2019, 7, 4, 1, 15, 42, 545000, tzinfo=UTC)


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def doc(name: str) -> dict[str, Any]:
    return json.loads(raw(name))


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def rejected(value: bytes | None, key: bytes | None, spec: TableSpec = CUSTOMERS) -> RejectedRecord:
    with pytest.raises(RejectedRecord) as caught:
        parse_change(value, key, spec)
    return caught.value


# --- the documentation's examples -----------------------------------------------------------


def test_documented_insert():
    event = parse_change(raw("doc_insert.json"), raw("doc_key.json"), CUSTOMERS)
    assert event is not None
    assert event.op is Op.CREATE
    assert event.key == {"id": 1001, "registration_date": REGISTERED}
    assert event.cells == {"first_name": Cell("Anne"), "last_name": Cell("Kretchmar"), "email": Cell("annek@noanswer.org")}
    assert event.writetime_us == 1562202942666382  # source.ts_ms, documented in microseconds
    assert event.position == "commitlog-6-123456.log:54"
    assert event.range_delete is None and event.new_columns == ()


def test_documented_update_carries_only_the_changed_cells():
    event = parse_change(raw("doc_update.json"), raw("doc_key.json"), CUSTOMERS)
    assert event is not None and event.op is Op.UPDATE
    assert event.cells == {"email": Cell("annek_new@noanswer.org")}
    assert event.writetime_us == 1562202942666490


def test_documented_delete_is_a_row_delete():
    event = parse_change(raw("doc_delete.json"), raw("doc_key.json"), CUSTOMERS)
    assert event is not None and event.op is Op.DELETE
    assert event.cells == {} and event.range_delete is None
    assert event.key == {"id": 1001, "registration_date": REGISTERED}


def test_without_a_record_key_the_key_comes_from_after():
    event = parse_change(raw("doc_insert.json"), None, CUSTOMERS)
    assert event is not None and event.key == {"id": 1001, "registration_date": REGISTERED}


def test_insert_is_c_or_i():
    document = doc("doc_insert.json")
    document["op"] = "i"  # what the documentation's text (and the connector's code) say
    event = parse_change(encode(document), raw("doc_key.json"), CUSTOMERS)
    assert event is not None and event.op is Op.CREATE


def test_kafka_tombstone_is_skipped():
    assert parse_change(None, raw("doc_key.json"), CUSTOMERS) is None


# --- cells: deletion, TTL, set ----------------------------------------------------------------


def test_cell_deletion_ttl_and_unset_cells():
    event = parse_change(raw("cell_changes.json"), raw("doc_key.json"), CUSTOMERS)
    assert event is not None
    assert event.writetime_us == 1720000000000500  # source.ts_us wins over ts_ms (milliseconds)
    assert event.cells == {
        "first_name": Cell(None, deleted=True),  # deletion_ts at the writetime
        "last_name": Cell("Kretchmar-Ng", expires_at_us=1720086400000000),  # deletion_ts in the future: a TTL
    }  # email: set=false, not part of the mutation
    assert event.position == "CommitLog-7-1720000000.log:4242"


def test_writetime_in_milliseconds_from_connectors_without_ts_us():
    document = doc("cell_changes.json")
    del document["source"]["ts_us"]
    event = parse_change(encode(document), raw("doc_key.json"), CUSTOMERS)
    assert event is not None and event.writetime_us == 1720000000000000
    # the cell deletion 500 µs into that millisecond is still at the writetime, not a TTL
    assert event.cells["first_name"] == Cell(None, deleted=True)
    assert event.cells["last_name"] == Cell("Kretchmar-Ng", expires_at_us=1720086400000000)


def test_a_null_value_without_deletion_is_a_null_cell():
    document = doc("doc_update.json")
    document["after"]["email"]["value"] = None
    event = parse_change(encode(document), raw("doc_key.json"), CUSTOMERS)
    assert event is not None and event.cells == {"email": Cell(None)}


# --- range and partition deletes ------------------------------------------------------------


def test_partition_delete_is_a_range_delete_of_the_key_prefix():
    event = parse_change(raw("partition_delete.json"), raw("partition_delete_key.json"), CUSTOMERS)
    assert event is not None and event.op is Op.DELETE
    assert event.range_delete == {"id": 1001}
    assert event.key == {"id": 1001, "registration_date": None}
    assert parse_change(raw("partition_delete.json"), None, CUSTOMERS) == event


def test_range_tombstones_are_refused_not_dropped():
    assert "range tombstones" in rejected(raw("range_tombstone.json"), raw("doc_key.json")).reason


# --- every type, with and without schemas ---------------------------------------------------

EXPECTED = {
    "t_text": "Zoë — 見積もり",
    "t_varchar": 'O\'Brien "Jr"',
    "t_ascii": "AB-1234",
    "t_tinyint": -128,
    "t_smallint": 32767,
    "t_int": -2147483648,
    "t_bigint": 9223372036854775807,
    "t_varint": Decimal(1234567890123),
    "t_decimal": Decimal("12345.678"),
    "t_float": 1.5,
    "t_boolean": True,
    "t_timestamp": REGISTERED,
    "t_date": date(2019, 7, 4),
    "t_time": time(12, 34, 56, 789012),
    "t_duration": timedelta(days=1, hours=2, minutes=3, seconds=4),
    "t_inet": ipaddress.ip_address("192.168.7.20"),
    "t_blob": b"\x00\x01\x02\xff",
    "t_list": [3, 1, 2],
    "t_set": ["a", "b"],
    "t_nested": [{"x": 1}, {"y": 2}],
    "t_map": {"pi": 3.14, "inf": "Infinity"},
    "t_map_int": {"1": "one", "2": "two"},
    "t_tuple": [7, "seven", "Bw=="],
    "t_udt": {"street": "1 Main St", "city": "Springfield", "postcode": "12345", "country": None},
}
KEY = {"id": uuid.UUID("3f2504e0-4f89-41d3-9a0c-0305e82c3301"), "seq": uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")}


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("all_types.json", "all_types_key.json"),
        ("all_types_with_schema.json", "all_types_key_with_schema.json"),
        ("all_types_precise_with_schema.json", "all_types_key_with_schema.json"),
        ("all_types_with_schema.json", None),
    ],
)
def test_every_type_field_by_field(value, key):
    event = parse_change(raw(value), raw(key) if key else None, ALL_TYPES)
    assert event is not None
    assert event.key == KEY
    assert event.writetime_us == 1720000000000001
    cells = {name: cell.value for name, cell in event.cells.items()}
    assert math.isnan(cells.pop("t_double"))
    assert cells == EXPECTED
    for name, expected in EXPECTED.items():
        assert type(cells[name]) is type(expected), name


def test_a_wrong_type_names_its_column():
    document = doc("all_types.json")
    document["after"]["t_int"]["value"] = "12"
    rejection = rejected(encode(document), raw("all_types_key.json"), ALL_TYPES)
    assert rejection.category == "invalid"
    assert rejection.reason == "column t_int: int: an integer was expected"


# --- schema evolution -----------------------------------------------------------------------


def test_new_columns_typed_from_the_value_without_schemas():
    document = doc("doc_update.json")
    document["after"] |= {
        f"new_{n}": {"value": v, "deletion_ts": None, "set": True}
        for n, v in [("flag", True), ("count", 3), ("ratio", 0.5), ("note", "hi"), ("blob", {"a": [1]}), ("huge", 2**70)]
    }
    document["after"]["new_unset"] = None
    event = parse_change(encode(document), raw("doc_key.json"), CUSTOMERS)
    assert event is not None
    assert event.new_columns == (
        NewColumn("new_flag", "boolean", True),
        NewColumn("new_count", "bigint", 3),
        NewColumn("new_ratio", "double precision", 0.5),
        NewColumn("new_note", "text", "hi"),
        NewColumn("new_blob", "jsonb", {"a": [1]}),
        NewColumn("new_huge", "numeric", Decimal(2**70)),
    )
    assert set(event.cells) == {"email"}


def test_new_columns_typed_from_the_schema():
    document = doc("all_types_with_schema.json")
    after_schema = document["schema"]["fields"][3]["fields"]
    renamed = {"t_timestamp": "added_at", "t_list": "added_list", "t_blob": "added_blob"}
    for field in after_schema:
        field["field"] = renamed.get(field["field"], field["field"])
    for old, new in renamed.items():
        document["payload"]["after"][new] = document["payload"]["after"].pop(old)
    event = parse_change(encode(document), raw("all_types_key.json"), ALL_TYPES)
    assert event is not None
    assert sorted(event.new_columns, key=lambda c: c.name) == [
        NewColumn("added_at", "timestamptz", REGISTERED),
        NewColumn("added_blob", "bytea", b"\x00\x01\x02\xff"),
        NewColumn("added_list", "jsonb", [3, 1, 2]),
    ]


@pytest.mark.parametrize("name", ["", "x" * 64, "bad\nname", "a\x00"])
def test_new_column_names_postgresql_cannot_take_are_refused(name):
    document = doc("doc_update.json")
    document["after"][name] = {"value": 1, "deletion_ts": None, "set": True}
    assert "new column" in rejected(encode(document), raw("doc_key.json")).reason


# --- refusals ---------------------------------------------------------------------------------


def mutated(change) -> bytes:
    document = doc("doc_insert.json")
    change(document)
    return encode(document)


@pytest.mark.parametrize(
    ("value", "key", "category", "reason"),
    [
        (b"{not json", None, "malformed", "not valid JSON"),
        (b"\xff\xfe", None, "malformed", "not valid JSON"),
        (b'{"op": "c", "x": NaN}', None, "malformed", "not valid JSON"),
        (b"[]", None, "invalid", "<root>"),
        (b"{}", None, "invalid", "op"),
        (mutated(lambda d: d.update(op="x")), None, "invalid", "op: not one of"),
        (mutated(lambda d: d.update(op=1)), None, "invalid", "op"),
        (mutated(lambda d: d["source"].update(keyspace="other")), None, "invalid", "keyspace/table"),
        (mutated(lambda d: d["source"].update(table="other")), None, "invalid", "keyspace/table"),
        (mutated(lambda d: d["source"].pop("ts_ms")), None, "invalid", "ts_ms"),
        (mutated(lambda d: d["source"].update(ts_ms="1")), None, "invalid", "source.ts_ms"),
        (mutated(lambda d: d["after"].pop("registration_date")), None, "invalid", "missing key column registration_date"),
        (mutated(lambda d: d["after"]["id"].update(value=None)), None, "invalid", "key column id is null"),
        (
            mutated(lambda d: d["after"]["registration_date"].update(value=None)),
            None,
            "invalid",
            "key column registration_date is null",
        ),
        (mutated(lambda d: d["after"]["email"].update(value=5)), None, "invalid", "column email: text"),
        (mutated(lambda d: d["after"]["email"].update(deletion_ts="soon")), None, "invalid", "deletion_ts"),
        (mutated(lambda d: d["after"].update(email=[1])), None, "invalid", "after.email"),
        (mutated(lambda d: None), b'{"id": 1001}', "invalid", "missing key column registration_date"),
        (mutated(lambda d: None), b'{"id": 1002, "registration_date": 1562202942545}', "invalid", "disagree on key column id"),
        (mutated(lambda d: None), b"[1]", "invalid", "<root>"),
        (mutated(lambda d: None), b"{", "malformed", "not valid JSON"),
    ],
)
def test_refusals(value, key, category, reason):
    rejection = rejected(value, key)
    assert rejection.category == category
    assert reason in rejection.reason


def test_reasons_do_not_echo_values():
    rejection = rejected(mutated(lambda d: d["after"]["email"].update(value={"secret": "hunter2"})), None)
    assert "hunter2" not in rejection.reason


# --- the simulator's envelopes, end to end --------------------------------------------------

SPECS = {spec.topic: spec for spec in DEMO_TABLES}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"with_schema": True},
        {"with_schema": True, "decimal_mode": "precise", "varint_mode": "precise"},
        {"decimal_mode": "string", "varint_mode": "string", "evolve_after": 30},
    ],
)
def test_simulated_envelopes_parse_as_their_kind_says(options):
    seen = set()
    for envelope in envelopes(300, seed=3, **options):
        seen.add(envelope.kind)
        spec = SPECS[envelope.topic]
        if envelope.kind.startswith("dirty:"):
            rejection = rejected(envelope.value, envelope.key, spec)
            assert rejection.category == ("malformed" if envelope.kind == "dirty:not_json" else "invalid")
            continue
        event = parse_change(envelope.value, envelope.key, spec)
        if envelope.kind == "tombstone":
            assert event is None
            continue
        assert event is not None, envelope.kind
        assert (event.range_delete is not None) == (envelope.kind == "partition_delete")
        if "evolve_after" in options and envelope.kind == "insert" and spec is DEMO_TABLES[0]:
            assert [c.name for c in event.new_columns] in ([], ["fraud_flag"])
    assert {"insert", "update", "delete", "cell_delete", "ttl", "out_of_order", "tombstone", "duplicate"} <= seen


# --- property tests: nothing but RejectedRecord escapes -------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)


def outcome(value: bytes | None, key: bytes | None, spec: TableSpec) -> None:
    try:
        parse_change(value, key, spec)
    except RejectedRecord as rejection:
        assert rejection.category in ("malformed", "invalid")
        assert len(rejection.reason) <= 500


@PROPERTY
@given(st.one_of(st.none(), st.binary(max_size=300)), st.one_of(st.none(), st.binary(max_size=100)))
def test_arbitrary_bytes(value, key):
    outcome(value, key, CUSTOMERS)


@PROPERTY
@given(json_values, st.one_of(st.none(), json_values))
def test_arbitrary_json(value, key):
    outcome(encode(value), None if key is None else encode(key), ALL_TYPES)


BASE = doc("all_types_with_schema.json")
PATHS = [
    ("payload", "op"),
    ("payload", "source"),
    ("payload", "source", "ts_us"),
    ("payload", "source", "keyspace"),
    ("payload", "after"),
    ("schema",),
]
PATHS += [("payload", "after", name) for name in BASE["payload"]["after"]]
PATHS += [("payload", "after", name, "value") for name in BASE["payload"]["after"]]
PATHS += [("payload", "after", name, field) for name in ("t_int", "t_udt") for field in ("deletion_ts", "set")]


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(PATHS), json_values), min_size=1, max_size=4), st.booleans())
def test_valid_envelopes_with_hostile_parts(replacements, keep_schema):
    document = copy.deepcopy(BASE if keep_schema else BASE["payload"])
    for path, replacement in replacements:
        target = document
        steps = path if keep_schema else path[1:]
        if not steps:
            continue
        for step in steps[:-1]:
            if not isinstance(target, dict) or not isinstance(target.get(step), dict):
                break
            target = target[step]
        else:
            target[steps[-1]] = replacement
    outcome(encode(document), raw("all_types_key.json"), ALL_TYPES)
