import json
from datetime import UTC, datetime

import pytest
from confluent_kafka import Message

from pipeline_defs.defs.xact.models import xact_event_row
from pipeline_defs.lib.dlq.records import RejectedRecord

VALID = {
    "trace_id": "t-1",
    "event_type": "verisk.claims.property.xn.estimatePackageReceived",
    "event_subtype": "estimatePackageReceived",
    "timestamp": "2026-11-02T10:00:00Z",
    "source_system": "xn",
    "payload": {"assignmentId": 5511, "estimateVersion": 3, "claimNumber": "CLM-1"},
    "attachments": ["https://files.example.com/a.pdf"],
    "unexpected_extra": "ignored",
}


def message(value: bytes) -> Message:
    return Message(topic="events.raw", partition=0, offset=1, value=value)


def row_of(event: dict) -> dict:
    return xact_event_row(message(json.dumps(event).encode()))


def test_a_valid_event_becomes_a_row_with_the_raw_payload():
    row = row_of(VALID)
    assert row["trace_id"] == "t-1"
    assert row["status_subtype"] == "estimatePackageReceived"
    assert row["assignment_id"] == "5511" and row["estimate_version"] == "3"
    assert row["event_timestamp"] == datetime(2026, 11, 2, 10, tzinfo=UTC)
    assert row["attachment_urls"] == ["https://files.example.com/a.pdf"]
    assert json.loads(row["raw_payload"]) == VALID


def test_naive_timestamps_are_taken_as_utc_and_offsets_are_normalised():
    assert row_of({**VALID, "timestamp": "2026-11-02T10:00:00"})["event_timestamp"].tzinfo == UTC
    shifted = row_of({**VALID, "timestamp": "2026-11-02T12:00:00+02:00"})["event_timestamp"]
    assert shifted == datetime(2026, 11, 2, 10, tzinfo=UTC)


def test_events_without_attachments_have_an_empty_list():
    assert row_of({k: v for k, v in VALID.items() if k != "attachments"})["attachment_urls"] == []


@pytest.mark.parametrize("raw", [b"{nope", b"\xff\xfe", b""])
def test_non_json_is_malformed(raw):
    with pytest.raises(RejectedRecord) as rejected:
        xact_event_row(message(raw))
    assert rejected.value.category == "malformed"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"trace_id": None}, "trace_id"),
        ({"trace_id": "   "}, "trace_id"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"attachments": [42]}, "attachments"),
    ],
)
def test_invalid_events_name_the_field_without_echoing_values(change, field):
    with pytest.raises(RejectedRecord) as rejected:
        row_of({**VALID, **change})
    assert rejected.value.category == "invalid"
    assert field in rejected.value.reason
    assert "yesterday" not in rejected.value.reason


def test_a_json_array_is_invalid():
    with pytest.raises(RejectedRecord) as rejected:
        xact_event_row(message(b"[1,2]"))
    assert rejected.value.category == "invalid"
