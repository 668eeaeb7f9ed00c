"""ClaimX message schemas: all nine event types, what each needs, and what is refused."""

from __future__ import annotations

import json
import random
from datetime import UTC

import pytest
from confluent_kafka import Message

from pipeline_defs.defs.claimx.models import ClaimXEvent, ClaimXEventType, claimx_blob_path, claimx_event_row
from pipeline_defs.lib.dlq.records import RejectedRecord
from pipeline_sim.claimx_events import MIX, ClaimXEventSource
from pipeline_sim.claimx_world import ClaimXWorld


def message(value: bytes) -> Message:
    return Message(topic="claimx.events.raw", partition=0, offset=1, value=value)


@pytest.mark.parametrize("event_type", list(MIX))
def test_every_event_type_validates_and_round_trips(event_type):
    source = ClaimXEventSource(ClaimXWorld("http://media.test"), random.Random(1))
    raw = json.dumps(source.event(event_type)).encode()

    row = claimx_event_row(message(raw))

    assert row["event_type"] == event_type and row["project_id"].isdigit()
    event = ClaimXEvent.model_validate_json(raw)
    assert ClaimXEvent.model_validate_json(event.model_dump_json()) == event
    assert event.ingested_at.tzinfo is not None


def test_nine_types_are_known():
    assert {t.value for t in ClaimXEventType} == set(MIX) and len(MIX) == 9


def test_naive_timestamps_are_utc_and_numeric_ids_become_text():
    event = ClaimXEvent.model_validate(
        {"event_id": 7, "event_type": "PROJECT_CREATED", "project_id": 42, "ingested_at": "2026-03-01T10:00:00"}
    )
    assert event.ingested_at.tzinfo == UTC and (event.event_id, event.project_id) == ("7", "42")


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"event_type": "PROJECT_ARCHIVED"}, "event_type"),
        ({"event_type": "PROJECT_FILE_ADDED"}, "media_id is required for PROJECT_FILE_ADDED"),
        ({"event_type": "CUSTOM_TASK_COMPLETED"}, "task_assignment_id is required"),
        ({"event_type": "VIDEO_COLLABORATION_COMPLETED"}, "video_collaboration_id is required"),
        ({"event_type": "PROJECT_MFN_ADDED"}, "master_file_name is required"),
        ({"project_id": None}, "project_id"),
        ({"ingested_at": "soon"}, "ingested_at"),
    ],
)
def test_invalid_events_are_refused_with_a_reason_naming_the_field(fields, reason):
    event = {"event_id": "e1", "event_type": "PROJECT_CREATED", "project_id": 1, "ingested_at": "2026-03-01T10:00:00Z", **fields}

    with pytest.raises(RejectedRecord) as refused:
        claimx_event_row(message(json.dumps(event).encode()))

    assert refused.value.category == "invalid" and reason in refused.value.reason
    assert "soon" not in refused.value.reason  # reasons never echo input values


def test_claimx_blob_paths_keep_each_project_in_its_folder():
    assert claimx_blob_path("5001", "5001-m3", "kitchen 1.jpg") == "claimx/5001/media/5001-m3_kitchen_1.jpg"
    assert claimx_blob_path("../x", "m", "../../etc/passwd") == "claimx/x/media/m_etc_passwd"
