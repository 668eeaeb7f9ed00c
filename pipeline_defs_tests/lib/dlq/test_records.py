from datetime import UTC, datetime

from confluent_kafka import Message

from pipeline_defs.lib.dlq.records import MAX_REASON_CHARS, RejectedRecord, dead_letter, error_headers


def test_dead_letter_keeps_bytes_key_and_headers_and_says_why_and_where_from():
    original = Message(
        topic="events.raw",
        partition=2,
        offset=41,
        key=b"k",
        value=b"\x00raw",
        headers=[("traceparent", b"00-abc")],
        timestamp=(1, 1_700_000_000_000),
    )
    record = dead_letter(
        original,
        RejectedRecord("invalid", "x" * 5_000),
        consumer_group="g",
        run_id="run-1",
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )

    assert record.value == b"\x00raw" and record.key == b"k"
    assert ("traceparent", b"00-abc") in record.headers
    replayed = Message(topic="dlq", headers=list(record.headers))
    headers = error_headers(replayed)
    assert headers["topic"] == "events.raw"
    assert headers["partition"] == "2" and headers["offset"] == "41"
    assert headers["timestamp"] == "1700000000000"
    assert headers["category"] == "invalid"
    assert len(headers["reason"]) == MAX_REASON_CHARS
    assert headers["consumer.group"] == "g" and headers["run.id"] == "run-1"
    assert headers["failed.at"] == "2026-01-01T00:00:00+00:00"


def test_dead_lettering_twice_does_not_stack_error_headers():
    first = dead_letter(
        Message(topic="a", partition=0, offset=1, value=b"v", timestamp=(1, 5)),
        RejectedRecord("invalid", "one"),
        consumer_group="g",
        run_id="r",
    )
    again = dead_letter(
        Message(topic="b", partition=0, offset=9, value=b"v", headers=list(first.headers), timestamp=(1, 6)),
        RejectedRecord("malformed", "two"),
        consumer_group="g",
        run_id="r",
    )
    names = [k for k, _ in again.headers]
    assert names.count("__dlq.errors.reason") == 1
    assert error_headers(Message(headers=list(again.headers)))["topic"] == "b"
