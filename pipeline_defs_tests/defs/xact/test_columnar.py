"""The columnar fast path for xact_events against the per-record path it stands in for: every
record it keeps is one the per-record path accepts, with the very same row; everything else
is handed back. Fed ordinary events, near-misses and garbage, in whole batches."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_defs.defs.xact.models import XACT_EVENTS, xact_event_row
from pipeline_defs.lib.ingest.columnar import ColumnarDecoder
from pipeline_defs.lib.ingest.guard import RejectedRecord
from pipeline_sim.events import MALFORMED_MESSAGES, encode, xact_event


def _decoder() -> ColumnarDecoder:
    assert XACT_EVENTS.columnar is not None, "xact_events has a columnar fast path"
    return XACT_EVENTS.columnar


DECODER = _decoder()
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Raw:
    """What the row builders read of a Kafka message."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value


def per_record(value: bytes) -> dict[str, Any] | None:
    try:
        return xact_event_row(Raw(value))  # type: ignore[arg-type]  # only value() is read
    except RejectedRecord:
        return None


def assert_agrees(values: list[bytes]) -> None:
    decoded = DECODER.decode(values)
    assert sorted(decoded.fast + decoded.slow) == list(range(len(values)))
    for row, index in zip(decoded.rows.to_pylist(), decoded.fast):
        assert row == per_record(values[index]), values[index]


strings = st.one_of(
    st.sampled_from(["a", "statusChanged", " padded ", "", "\t", "x" * 512, "x" * 513, "é", "a\u2028", "a\x1f", "0", "\u00a0b"]),
    st.text(max_size=20),
)
field_values = st.one_of(
    strings, st.none(), st.integers(-5, 5), st.floats(allow_nan=False), st.booleans(), st.just([]), st.just({})
)
instants = st.one_of(
    st.sampled_from(
        [
            "2026-12-01T05:47:04Z",
            "2026-12-01T05:47:04.123+01:00",
            "2026-12-01T05:47:04.1234567Z",
            "2026-12-01 05:47:04Z",
            "2026-02-30T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T23:59:60Z",
            "0001-01-01T00:30:00+01:00",
            "0001-01-02T00:00:00Z",
            "9999-12-30T00:00:00Z",
            "9999-12-31T23:59:59-01:00",
            "0000-01-01T00:00:00Z",
            "2026-12-01T05:47:04-23:59",
            "2026-12-01T05:47:04+24:00",
            "2026-12-01",
            "2026-12-01T05:47:04z",
            "1700000000",
        ]
    ),
    st.datetimes(min_value=datetime(1, 1, 3), max_value=datetime(9999, 12, 29), timezones=st.sampled_from([UTC, None])).map(
        lambda d: d.isoformat()
    ),
)
payloads = st.one_of(
    st.fixed_dictionaries({}, optional={"assignmentId": field_values, "estimateVersion": field_values, "other": field_values}),
    st.none(),
    st.integers(),
    st.just({"assignmentId": "A1", "deep": [[[[1.5e308]]]]}),
)
attachment_lists = st.one_of(st.none(), st.lists(st.one_of(strings, st.none(), st.integers()), max_size=3))
events = st.fixed_dictionaries(
    {},
    optional={
        "trace_id": st.one_of(strings, field_values),
        "event_type": strings,
        "event_subtype": strings,
        "timestamp": st.one_of(instants, field_values),
        "source_system": st.one_of(strings, st.none()),
        "payload": payloads,
        "attachments": attachment_lists,
    },
)


def ordinary(rng: random.Random) -> dict[str, Any]:
    return xact_event(rng, "https://attachments.test")


@PROPERTY
@given(st.lists(events, min_size=1, max_size=30), st.integers(0, 2**32))
def test_whatever_the_fields_hold_the_fast_path_agrees_with_the_per_record_path(batch, seed):
    rng = random.Random(seed)
    values = [json.dumps(e, ensure_ascii=rng.random() < 0.5).encode() for e in batch]
    values += [encode(ordinary(rng)) for _ in range(5)]
    rng.shuffle(values)
    assert_agrees(values)


raw_values = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"{}",
            b"[1]",
            b'{"trace_id":"a","trace_id":"b"}',
            b'{"a":1} {"b":2}',
            b'\xef\xbb\xbf{"trace_id":"a"}',
            b'{"trace_id":"a",}',
            b'{"payload":{"x":NaN}}',
            b'{"payload":' + b"[" * 300 + b"]" * 300 + b"}",
            b'{"\\u0074race_id":"t"}',
            b'{"trace_id":"\\ud800"}',
        ]
    ),
)


@PROPERTY
@given(st.lists(raw_values, max_size=10), st.integers(0, 2**32))
def test_garbage_between_ordinary_events_is_handed_back_and_the_rest_decoded(garbage, seed):
    rng = random.Random(seed)
    values = [encode(ordinary(rng)) for _ in range(20)] + list(garbage) + list(MALFORMED_MESSAGES)
    rng.shuffle(values)
    decoded = DECODER.decode(values)
    assert_agrees(values)
    assert len(decoded.fast) >= 20 * 0.9  # the sim's ordinary events: nearly all take the fast path


@pytest.mark.parametrize(
    "mutation",
    [
        lambda e: {**e, "attachments": [e["attachments"][0] if e.get("attachments") else "u", None]},
        lambda e: {**e, "timestamp": (datetime.now(UTC) + timedelta(hours=1)).astimezone().isoformat()},
        lambda e: {k: v for k, v in e.items() if k != "source_system"},
        lambda e: {k: v for k, v in e.items() if k != "payload"},
        lambda e: {**e, "payload": {"assignmentId": 42}},
    ],
)
def test_near_misses_of_ordinary_events(mutation):
    rng = random.Random(3)
    values = [json.dumps(mutation(ordinary(rng))).encode() for _ in range(10)]
    assert_agrees(values)
